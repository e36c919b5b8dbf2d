"""The one typed ``Notifier`` the tuner talks to: ``notify(event, **payload)``.

``LogNotifier`` (alerts off or not configured: one log line per event) and ``AlertNotifier``
(``event`` -> the AlertManager's builder of that name: ``new_best``, ``early_stop``, ...).
Alerts never break the study: a failed one is a warning.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from ttsops.config import AlertsConfig
from ttsops.smart_tuner.alerts.alert_manager import AlertManager

logger = logging.getLogger(__name__)


class Notifier(Protocol):
    def notify(self, event: str, **payload: Any) -> None: ...


class LogNotifier:
    """Alerts off or not configured: one log line per event."""

    def __init__(self, study: str) -> None:
        self.study = study

    def notify(self, event: str, **payload: Any) -> None:
        logger.info(
            "study %s: %s %s",
            self.study,
            event,
            ", ".join(
                f"{k}=<{len(v)} bytes>" if isinstance(v, bytes) else f"{k}={v}" for k, v in payload.items()
            ),
        )

    def close(self) -> None:
        return None


class AlertNotifier:
    """``notify(event, **payload)`` -> the AlertManager's builder of that name (``new_best``, ...)."""

    def __init__(self, manager: Any, study: str) -> None:
        self.manager, self.study = manager, study

    def notify(self, event: str, **payload: Any) -> None:
        fn = getattr(self.manager, event, None)
        try:
            if fn is None:
                raise TypeError(f"no alert builder {event!r}")
            fn(self.study, **payload)
        except Exception as e:  # alerts never break the study
            logger.warning("alert %s not sent: %s", event, e)

    def close(self) -> None:
        self.manager.close()


def alert_notifier(alerts_cfg: AlertsConfig, study: str) -> AlertNotifier:
    return AlertNotifier(AlertManager(alerts_cfg), study)
