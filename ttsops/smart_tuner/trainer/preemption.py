"""Preemption is not failure: telling a trainer stopped from outside from one that failed.

A **preemption** ends a trainer process by something outside it and outside the tuner's own
decisions: SIGKILL (the kernel's OOM killer, a spot instance's reclaim, ``kill -9``), SIGTERM or
SIGINT nobody in the tuner sent, or the tuner dying with its generation running. The generation
resumes from its newest checkpoint and does not count against ``adapter.max_retries`` nor
``core_engine.n_trials``. Only the trainer's own errors (a non-zero exit of its own, a hang) are
crashes, retried ``max_retries`` times and then FAIL.

How an exit is read (``preempted_by``):

* killed by SIGKILL, SIGTERM or SIGINT (``Popen`` returns ``-signal``; a wrapper shell exits
  ``128 + signal``, so 137, 143, 130; train.py's "second signal, exit at once" is 130 too);
* exit 0 while the trainer's ``train_state`` says it stopped on a signal (``stop_signal``, which
  train.py records): it saved its checkpoint and left early, it did not finish.

A crash loop that looks like preemption (an OOM kill at the same step, again and again) is bounded by
``adapter.max_consecutive_preemptions``: preemptions in a row with no validation between them
(``Streak``). Beyond it the generation is FAIL like a crash. The streak follows a generation across
re-queues (``history.RESUME_ATTR``), so a tuner killed again and again is bounded too.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

OUTSIDE_SIGNALS = frozenset({signal.SIGKILL, signal.SIGTERM, signal.SIGINT})
SHELL_SIGNAL_EXIT = 128  # a shell reports a child killed by signal n as exit 128 + n


def preempted_by(code: int | None, train_state: Mapping[str, Any] | None = None) -> str | None:
    """Why an exit the tuner did not ask for is a preemption (a short phrase), or None when it is
    the trainer's own doing (a clean finish or a crash). Pure."""
    if code is None:
        return None
    if code < 0 and -code in OUTSIDE_SIGNALS:
        return f"killed by {signal.Signals(-code).name}"
    if code > SHELL_SIGNAL_EXIT and code - SHELL_SIGNAL_EXIT in OUTSIDE_SIGNALS:
        return f"exit {code} ({signal.Signals(code - SHELL_SIGNAL_EXIT).name})"
    stopped = (train_state or {}).get("stop_signal")
    if code == 0 and stopped:
        return f"stopped by {stopped} before its last epoch (checkpoint written)"
    return None


@dataclass(frozen=True)
class Streak:
    """Preemptions in a row: ``count`` since the last validation, ``at`` = how many validations the
    generation had done at the last one (validations count on across a resume)."""

    count: int = 0
    at: int = 0

    def after(self, validations: int) -> Streak:
        """The streak once another preemption happened with ``validations`` done so far."""
        return Streak(1 if validations > self.at else self.count + 1, validations)

    def over(self, cap: int) -> bool:
        return self.count > cap

    def to_dict(self) -> dict[str, int]:
        return {"streak": self.count, "at": self.at}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Streak:
        d = d or {}
        return cls(int(d.get("streak", 0)), int(d.get("at", 0)))


@dataclass(frozen=True)
class Carry:
    """What a generation resumed after a preemption takes over from the trial it continues: the
    checkpoint to resume, the objectives reported so far (step -> value, re-reported so the
    pruner sees one curve), the last validation's metrics, the streak, and ``epoch_base`` (the
    trainer's epoch count when the first generation of the line started: a trainer that counts
    epochs in total gets ``epoch_base + epochs_per_generation``)."""

    trial: int
    checkpoint: Any  # Path | None: the newest checkpoint of the line (None: none was written)
    values: dict[int, float]
    metrics: dict[str, float]
    streak: Streak
    epoch_base: int = 0

    @property
    def validations(self) -> int:
        return len(self.values)

    @property
    def value(self) -> float | None:
        return self.values[max(self.values)] if self.values else None


def epochs_to_run(per_generation: int, done: int, counts_in_total: bool, epoch_base: int = 0) -> int:
    """``epochs`` for a launch that continues a generation: a trainer that counts epochs in total
    across an exact resume (train.py, it keeps ``train_state.json``) gets the generation's total; one
    that counts per process gets what is left (at least 1)."""
    if counts_in_total:
        return epoch_base + per_generation
    return max(1, per_generation - done)
