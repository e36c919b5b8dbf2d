"""What the sampler learns from (search/line_effect.py): line effects in a shadow study, on real
in-memory Optuna studies."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from ttsops.config import OptimizationConfig, ParamSpec
from ttsops.smart_tuner.search.line_effect import (
    PROPOSED_ATTR,
    line_effect,
    propose,
    queue_proposal,
    shadow_study,
)
from ttsops.smart_tuner.search.samplers import SAMPLERS
from ttsops.smart_tuner.search.warm_line import REFERENCE_ATTR, end_level

SPACE = {"arm": ParamSpec(type="choice", choices=["a", "b"]), "lr": ParamSpec(type="loguniform", low=1e-4, high=1e-2)}
DISTS = {"arm": CategoricalDistribution(["a", "b"]), "lr": FloatDistribution(1e-4, 1e-2, log=True)}


def finished(arm, reference, values, state=TrialState.COMPLETE, lr=1e-3):
    return create_trial(
        params={"arm": arm, "lr": lr}, distributions=DISTS, state=state,
        value=min(values) if state == TrialState.COMPLETE else None,
        intermediate_values=dict(enumerate(values, start=1)),
        user_attrs={} if reference is None else {REFERENCE_ATTR: reference},
    )


def test_the_line_effect_is_where_a_continuation_took_the_line_from_where_it_started():
    done = finished("a", 3.3, [3.5, 3.3, 3.2, 3.1, 3.0])
    assert line_effect(done) == pytest.approx(end_level([3.5, 3.3, 3.2, 3.1, 3.0]) - 3.3)
    assert line_effect(finished("a", 3.3, [3.6, 3.9, 4.1], TrialState.PRUNED)) == pytest.approx(4.1 - 3.3)
    assert line_effect(finished("a", None, [19.3, 9.0, 5.5])) is None  # fresh: no line
    assert line_effect(finished("a", 3.3, [], TrialState.PRUNED)) is None


def aged_study() -> optuna.Study:
    """A line whose objective falls with its age: the early continuations ("a") moved it down by
    0.5 each, the late ones ("b") up by 0.2 (the line aged 0.3 between them), yet "b" has the lower
    objectives."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.add_trial(finished("a", None, [19.0, 9.0, 5.5]))  # the fresh first generation
    level = 5.5
    for k in range(12):
        arm = "a" if k < 6 else "b"
        step = -0.5 if arm == "a" else 0.2
        study.add_trial(finished(arm, level, [level + step] * 5, lr=1e-3 * (1 + k / 10)))
        level = level + step if arm == "a" else level - 0.3  # the line still ages
    return study


def test_the_shadow_study_holds_effects_not_objectives_and_tpe_follows_them():
    study = aged_study()
    trials = study.get_trials()
    cfg = OptimizationConfig(sampler="tpe", tpe={"n_startup_trials": 3}, seed=0)
    shadow = shadow_study(trials, SAMPLERS["tpe"](cfg, SPACE), study.direction)
    assert [t.value for t in shadow.trials] == pytest.approx([line_effect(t) for t in trials[1:]])
    assert {t.params["arm"] for t in shadow.trials if t.value < 0} == {"a"}
    assert min(trials, key=lambda t: t.value).params["arm"] == "b"  # by objective "b" looks best
    picks = [propose(study, cfg.model_copy(update={"seed": s}), SPACE)["arm"] for s in range(20)]
    assert picks.count("a") >= 16, picks
    plain = [  # the study's own TPE, on objectives, goes the other way
        optuna.create_study(sampler=SAMPLERS["tpe"](cfg.model_copy(update={"seed": s}), SPACE)) for s in range(20)]
    for p in plain:
        p.add_trials(trials)
    assert sum(p.ask({"arm": DISTS["arm"]}).params["arm"] == "b" for p in plain) >= 16


def test_who_proposes():
    study = aged_study()
    cfg = OptimizationConfig(sampler="tpe", seed=0)
    assert propose(study, cfg, SPACE) == propose(study, cfg, SPACE)  # seeded: a resumed study proposes the same
    for other in ({"sampler_value": "objective"}, {"sampler": "random"}, {"sampler": "cma_es"}):
        assert propose(study, cfg.model_copy(update=other), SPACE) is None  # the study's own sampler
    young = optuna.create_study()
    young.add_trial(finished("a", None, [19.0, 9.0, 5.5]))
    young.add_trial(finished("a", 5.5, [5.0, 4.8]))
    assert propose(young, cfg, SPACE) is None  # one effect: too few
    params = queue_proposal(study, cfg, SPACE)
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].user_attrs[PROPOSED_ATTR] and params["arm"] in ("a", "b")
    assert queue_proposal(study, cfg, SPACE) is None  # something waits already: it goes first
    t = study.ask()  # the queued trial, with the proposed params
    assert t.user_attrs[PROPOSED_ATTR] and t.suggest_categorical("arm", ["a", "b"]) == params["arm"]
