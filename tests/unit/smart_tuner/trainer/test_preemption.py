"""Preemption or crash: how an exit the tuner did not ask for is read, and the crash-loop bound."""

from __future__ import annotations

import signal

import pytest

from ttsops.smart_tuner.trainer.preemption import Carry, Streak, epochs_to_run, preempted_by


@pytest.mark.parametrize(
    ("code", "state", "want"),
    [
        (-signal.SIGKILL, None, "killed by SIGKILL"),  # OOM killer, spot reclaim, kill -9
        (-signal.SIGTERM, None, "killed by SIGTERM"),
        (-signal.SIGINT, None, "killed by SIGINT"),
        (137, None, "exit 137 (SIGKILL)"),  # through a wrapper shell
        (143, None, "exit 143 (SIGTERM)"),
        (130, None, "exit 130 (SIGINT)"),  # train.py's second signal
        (0, {"status": "stopped", "stop_signal": "SIGTERM"}, "stopped by SIGTERM before its last epoch"),
        (0, {"status": "finished", "stop_signal": None}, None),  # a clean finish
        (0, None, None),
        (1, None, None),  # its own error: a crash
        (2, None, None),  # the contract's bad input
        (3, {"stop_signal": "SIGTERM"}, None),  # a crash after a stop signal is still a crash
        (-signal.SIGSEGV, None, None),  # its own fault
        (-signal.SIGABRT, None, None),
        (139, None, None),  # 128 + SIGSEGV
        (None, None, None),  # still running (a stall is not a preemption)
    ],
)
def test_preempted_by(code, state, want):
    got = preempted_by(code, state)
    assert (got is None) == (want is None), got
    if want is not None:
        assert got.startswith(want)


def test_the_streak_counts_preemptions_without_a_validation_between():
    s = Streak()
    s = s.after(0)  # before the first validation
    assert (s.count, s.at) == (1, 0)
    s = s.after(0)
    assert s.count == 2 and not s.over(2) and s.after(0).over(2)
    s = s.after(1)  # a validation happened since: the streak starts over
    assert (s.count, s.at) == (1, 1)
    assert Streak.from_dict(s.to_dict()) == s and Streak.from_dict(None) == Streak()
    assert Streak().after(0).over(0)  # cap 0: the first preemption fails the generation


def test_epochs_to_run_for_a_trainer_counting_in_total_or_per_process():
    assert epochs_to_run(4, done=3, counts_in_total=True, epoch_base=10) == 14
    assert epochs_to_run(4, done=3, counts_in_total=False) == 1
    assert epochs_to_run(4, done=9, counts_in_total=False) == 1  # never 0: the trainer would do nothing
    assert epochs_to_run(4, done=0, counts_in_total=False) == 4


def test_carry_value_is_the_last_reported_objective():
    c = Carry(3, None, {2: 0.5, 1: 0.9}, {}, Streak())
    assert c.validations == 2 and c.value == 0.5
    assert Carry(3, None, {}, {}, Streak()).value is None
