"""Which of a trainer's metric records are validations, and the metrics of each (pure; no I/O).

What counts as an epoch: a record of the adapter's ``epoch_metric``. It is *ready* once ``val_loss``
has arrived at the same global step, or after ``settle_polls`` further polls (a trainer that logs
validation under another step). The metrics of that validation are, per metric, the latest value at
or before its step (``metrics_at``). generation.py reports them.
"""

from __future__ import annotations

from collections.abc import Mapping

from ttsops.smart_tuner.trainer.metrics_store import MetricRecord

VALUE_METRIC = "val_loss"
OWN_METRICS = frozenset({"objective", "tuner_epoch"})  # what the tuner logs into the child run itself


class ValidationTracker:
    """Pure bookkeeping: which epoch records became validations, in order (no I/O)."""

    def __init__(self, epoch_names: set[str], settle_polls: int = 2) -> None:
        self.epoch_names = epoch_names
        self.settle_polls = settle_polls
        self._pending: dict[int, tuple[int, float]] = {}  # step -> (poll seen, trainer timestamp)
        self._value_at: dict[int, float] = {}  # val_loss step -> its timestamp
        self._done: set[int] = set()

    def feed(self, records: list[MetricRecord], poll: int) -> None:
        for r in records:
            if r.metric in self.epoch_names and r.step not in self._done and r.step not in self._pending:
                self._pending[r.step] = (poll, r.timestamp)
            elif r.metric == VALUE_METRIC:
                self._value_at[r.step] = max(r.timestamp, self._value_at.get(r.step, 0.0))

    def ready(self, poll: int, force: bool = False) -> list[tuple[int, float]]:
        """``(global step, trainer timestamp)`` of validations that are complete, oldest first."""
        out = []
        for step in sorted(self._pending):
            seen, ts = self._pending[step]
            if step in self._value_at or force or poll - seen >= self.settle_polls:
                out.append((step, max(ts, self._value_at.get(step, 0.0))))
        for step, _ in out:
            del self._pending[step]
            self._done.add(step)
        return out


def metrics_at(history: Mapping[str, list[tuple[int, float]]], step: int) -> dict[str, float]:
    """Per metric, the latest value logged at or before ``step`` (pure)."""
    out: dict[str, float] = {}
    for name, curve in history.items():
        if name in OWN_METRICS:  # read back from the child run: not the trainer's
            continue
        at = [v for s, v in curve if s <= step]
        if at:
            out[name] = at[-1]
    return out
