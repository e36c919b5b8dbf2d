"""Who hears about the study: ``alert_manager`` (Telegram, Slack, e-mail, webhook, the log; queued,
retried, rate limited), its ``channels``, and the ``notifier`` the tuner talks to."""
