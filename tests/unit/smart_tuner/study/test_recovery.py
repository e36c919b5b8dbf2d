"""Re-queueing a preempted generation: where its line's newest checkpoint is, the streak, the cap, and
how the study counts it (a real in-memory Optuna study, real checkpoint files, the real wrapper)."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from ttsops.config import AdapterConfig
from ttsops.smart_tuner.study import history
from ttsops.smart_tuner.study.recovery import requeue_preempted
from ttsops.smart_tuner.trainer.trainer_wrapper import TrainerWrapper

WRAPPER = TrainerWrapper(AdapterConfig(checkpoint_glob="ckpt-*.npz"))


@pytest.fixture
def study():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study()


def _preempt(study, gen_dir, values=(), **attrs):
    """Run a trial (asked, as the tuner does) that reports ``values``, then its tuner dies: FAIL."""
    t = study.ask({"lr": optuna.distributions.FloatDistribution(0.01, 0.5)})
    t.set_user_attr(history.GEN_DIR_ATTR, str(gen_dir))
    t.set_user_attr(history.RESULT_ATTR, {"state": "interrupted", "preemptions": 1})
    for k, v in attrs.items():
        t.set_user_attr(k, v)
    for step, v in enumerate(values, 1):
        t.report(v, step)
    study.tell(t, state=TrialState.FAIL)
    return next(x for x in study.get_trials() if x.number == t.number)


def test_a_preempted_trial_is_requeued_to_resume_its_own_checkpoint(study, tmp_path):
    gen = tmp_path / "gen_0000"
    gen.mkdir()
    (gen / "ckpt-000010.npz").write_bytes(b"x")
    t0 = _preempt(study, gen, [0.9, 0.8], **{history.PLAN_ATTR: {"mode": "fresh", "epoch_base": 5}})
    assert requeue_preempted(study, t0, WRAPPER, max_preemptions=3)
    queued = study.get_trials(states=(TrialState.WAITING,))[0]
    assert queued.user_attrs[history.RESUME_ATTR] == {"trial": 0, "gen_dir": str(gen), "streak": 1, "at": 2,
                                                      "epoch_base": 5}
    assert queued.user_attrs[history.RETRY_HISTORY_ATTR] == [0] and queued.system_attrs["fixed_params"] == t0.params
    trials = study.get_trials()
    assert history.generations_used(trials) == 0  # neither the FAIL nor the waiting re-run counts yet
    assert history.generation_rows(trials)[0]["state"] == "PREEMPTED" and history.preemptions(trials) == 1


def test_a_rerun_preempted_before_its_first_checkpoint_points_at_its_source(study, tmp_path):
    src = tmp_path / "gen_0000"
    resume = {"trial": 0, "gen_dir": str(src), "streak": 1, "at": 2, "epoch_base": 0}
    t1 = _preempt(study, tmp_path / "gen_0001", [0.9, 0.8], **{history.RESUME_ATTR: resume,
                                                            history.RETRY_HISTORY_ATTR: [0]})
    assert requeue_preempted(study, t1, WRAPPER, max_preemptions=3)
    carry = study.get_trials(states=(TrialState.WAITING,))[0].user_attrs[history.RESUME_ATTR]
    assert carry["gen_dir"] == str(src) and (carry["streak"], carry["at"]) == (2, 2)  # no validation between


def test_the_streak_cap_ends_the_line_as_a_counted_fail(study, tmp_path):
    resume = {"trial": 0, "gen_dir": None, "streak": 2, "at": 0}
    t = _preempt(study, tmp_path / "g", **{history.RESUME_ATTR: resume, history.RETRY_HISTORY_ATTR: []})
    assert not requeue_preempted(study, t, WRAPPER, max_preemptions=2)
    trials = study.get_trials()
    assert not study.get_trials(states=(TrialState.WAITING,))
    assert history.generations_used(trials) == 1 and history.generation_rows(trials)[0]["state"] == "FAIL"


def test_in_place_preemptions_continue_the_streak(study, tmp_path):
    t = _preempt(study, tmp_path / "g", [1.0], **{history.PREEMPT_ATTR: {"count": 2, "streak": 2, "at": 1}})
    assert requeue_preempted(study, t, WRAPPER, max_preemptions=3)
    carry = study.get_trials(states=(TrialState.WAITING,))[0].user_attrs[history.RESUME_ATTR]
    assert (carry["streak"], carry["at"]) == (3, 1)
