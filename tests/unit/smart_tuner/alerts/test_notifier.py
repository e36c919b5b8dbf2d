"""The tuner's Notifier: events become AlertManager builders or log lines; alerts never break a study."""

from __future__ import annotations

import logging

from ttsops.smart_tuner.alerts.alert_manager import Alert, NullNotifier
from ttsops.smart_tuner.alerts.notifier import AlertNotifier, LogNotifier


class Recorder(NullNotifier):
    def __init__(self) -> None:
        self.sent: list[Alert] = []
        self.closed = False

    def notify(self, alert: Alert) -> None:
        self.sent.append(alert)

    def close(self, timeout: float = 10.0) -> None:
        self.closed = True


def test_an_event_goes_to_the_builder_of_that_name():
    rec = Recorder()
    n = AlertNotifier(rec, "s1")
    n.notify("new_best", generation=3, value=0.25, metrics={"val_loss": 0.3})
    n.close()
    assert [a.event.value for a in rec.sent] == ["new_best"] and "s1" in rec.sent[0].title
    assert rec.closed


def test_an_unknown_event_or_a_bad_payload_is_a_warning(caplog):
    n = AlertNotifier(Recorder(), "s1")
    with caplog.at_level(logging.WARNING):
        n.notify("no_such_event", x=1)
        n.notify("new_best", bogus=1)
    assert caplog.text.count("not sent") == 2


def test_log_notifier_names_attachments_by_size(caplog):
    with caplog.at_level(logging.INFO):
        LogNotifier("s1").notify("new_best", value=0.5, audio_wav=b"RIFF1234")
    assert "study s1: new_best value=0.5, audio_wav=<8 bytes>" in caplog.text
