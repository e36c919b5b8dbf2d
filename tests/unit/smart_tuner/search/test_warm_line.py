"""A warm-started generation judged against the line it continues (search/warm_line.py), alone and
inside the OptimizationEngine on a real in-memory Optuna study."""

from __future__ import annotations

import math

import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from ttsops.config import OptimizationConfig, ParamSpec
from ttsops.smart_tuner.search.opt_engine import OptimizationEngine
from ttsops.smart_tuner.search.warm_line import (
    MIN_DIFFS,
    continuation_verdict,
    line_level,
    projection,
    validation_noise,
)

SPACE = {"learning_rate": ParamSpec(type="loguniform", low=1e-5, high=1e-2)}
FRESH = [  # objectives per validation of five fresh trials: a restart transient, then a noisy level
    [1.5, 1.02, 0.98, 1.01, 0.99],
    [1.6, 0.97, 1.01, 0.98, 1.02],
    [1.4, 1.03, 0.99, 1.02, 0.98],
    [1.5, 0.99, 1.02, 0.98, 1.01],
    [1.7, 1.01, 0.97, 1.00, 0.99],
]


def frozen(values, state=TrialState.COMPLETE):
    return create_trial(state=state, value=values[-1] if state == TrialState.COMPLETE else None,
                        params={"learning_rate": 1e-3},
                        distributions={"learning_rate": FloatDistribution(1e-5, 1e-2, log=True)},
                        intermediate_values=dict(enumerate(values, start=1)))


def test_noise_is_the_spread_of_one_validation_without_each_trials_first_value():
    noise = validation_noise([frozen(v) for v in FRESH])
    assert noise is not None and 0.02 < noise < 0.05  # the level wobbles by ~+-0.02-0.03
    # the restart transient (1.5 -> 1.0) is not noise: with it the estimate would not move,
    # since it is left out; a trial still running is not read
    assert validation_noise([frozen(v) for v in FRESH] + [frozen([9.0, 1.0, 5.0], TrialState.RUNNING)]) == noise
    assert validation_noise([frozen([1.0, 2.0, 3.0])]) is None  # one difference < MIN_DIFFS
    assert MIN_DIFFS > 1


@pytest.mark.parametrize(
    ("values", "step", "pruned"),
    [
        ([1.6, 1.7, 1.8], 1, False),  # before the pruner's warm-up step
        ([1.6, 1.7], 2, False),  # the first validation after the restart does not count: one left
        ([1.9, 1.02, 1.04, 1.03], 4, False),  # within the margin of the line (0.98 + 2 x 0.03)
        ([1.9, 1.02, 1.30, 1.03], 4, False),  # one unlucky validation
        ([1.02, 1.02, 1.30, 1.25], 4, True),  # two past the margin
        ([1.9, 1.30, 1.10], 3, False),  # past it, but still coming back from its restart
        ([1.9, 1.30, 1.27], 3, True),  # past it and no longer coming back
    ],
)
def test_a_continuation_is_pruned_only_when_two_validations_are_clearly_worse(values, step, pruned):
    why = continuation_verdict(values, step, 0.98, 0.03, sigmas=2.0, min_step=2)
    assert (why is not None) is pruned
    if pruned:
        assert "worse than the line it continues" in why and "0.98" in why and "noise 0.03" in why


@pytest.mark.parametrize(
    ("values", "horizon", "pruned"),
    [
        ([2.0, 1.75, 1.6, 1.45], 9, False),  # slowly coming back, and 5 validations left to get there
        ([2.0, 1.75, 1.6, 1.45], 5, True),  # the same, one validation left: it will not
        ([2.0, 1.75, 1.6, 1.45], None, True),  # no horizon: projected as far as it was judged (3)
        ([2.0, 1.45, 1.6, 1.75], 9, True),  # getting worse
        ([2.0, 1.5, 1.5, 1.5], 30, True),  # flat past the margin: no trend to wait for
    ],
)
def test_a_continuation_whose_trend_brings_it_back_runs_on(values, horizon, pruned):
    why = continuation_verdict(values, 4, 1.0, 0.1, sigmas=2.0, min_step=2, horizon=horizon)
    assert (why is not None) is pruned
    if pruned:
        assert "trend" in why


def test_projection_is_the_fitted_line_with_a_pessimistic_slope():
    assert projection([3.0, 2.0], 0.0, 2) == pytest.approx(0.0)
    assert projection([3.0, 2.0], 0.5, 2) == pytest.approx(0.0 + 2 * 0.5 / math.sqrt(0.5))
    assert projection([1.0, 2.0], 0.5, 1, sign=-1.0) == pytest.approx(3.0 - 0.5 / math.sqrt(0.5))  # maximising
    assert projection([1.0, 1.0, 1.0], 0.0, 10) == pytest.approx(1.0)


def test_maximising_and_the_margins_floor_for_a_noiseless_line():
    assert continuation_verdict([0.9, 0.5, 0.5], 3, 0.9, 0.05, sigmas=2.0, min_step=1, maximize=True)
    assert continuation_verdict([0.9, 0.85, 0.85], 3, 0.9, 0.05, sigmas=2.0, min_step=1, maximize=True) is None
    assert continuation_verdict([2.0, 1.005, 1.005], 3, 1.0, 0.0, sigmas=2.0, min_step=1) is None  # < 1%
    assert continuation_verdict([2.0, 1.02, 1.02], 3, 1.0, 0.0, sigmas=2.0, min_step=1)


def engine(sigmas):
    c = OptimizationConfig(sampler="random", pruner="median", hyperband={"min_resource": 1, "max_resource": 9,
                           "reduction_factor": 3}, seed=3, warm_prune_sigmas=sigmas)
    eng = OptimizationEngine(c, SPACE, storage="memory", study_name="w")
    for values in FRESH:
        t = eng.ask()
        for step, v in enumerate(values, start=1):
            eng.report(t, v, step)
        eng.tell(t, values[-1], TrialState.COMPLETE)
    return eng


def run(eng, values, reference=0.98):
    t = eng.ask()
    eng.set_reference(t, reference)
    for step, v in enumerate(values, start=1):
        if eng.report(t, v, step):
            return step, eng.prune_reason(t)
    return None, None


def test_the_engine_judges_a_warm_trial_by_its_line_and_a_fresh_one_by_the_pruner():
    level = [1.00, 1.01, 1.02, 1.00]  # the line's level: above the fresh trials' median, within noise
    assert run(engine(2.0), level) == (None, None)
    step, why = run(engine(None), level)  # the median rule prunes the same values
    assert step is not None and why is None
    step, why = run(engine(2.0), [1.6, 1.7, 1.75])  # the new hparams broke the line
    assert step == 3 and "worse than the line" in why
    fresh = engine(2.0)  # no reference: the pruner, as before
    t = fresh.ask()
    assert (fresh.report(t, 1.6, 1) or fresh.report(t, 1.7, 2)) and fresh.prune_reason(t) is None
    assert math.isclose(t.user_attrs.get("ttsops.line_reference", -1.0), -1.0)


def test_until_the_noise_is_known_the_pruner_judges_a_warm_trial():
    c = OptimizationConfig(sampler="random", pruner="median", seed=3, warm_prune_sigmas=2.0,
                           hyperband={"min_resource": 1, "max_resource": 9, "reduction_factor": 3})
    eng = OptimizationEngine(c, SPACE, storage="memory", study_name="n")
    for values in FRESH:
        t = eng.ask()
        for step, v in enumerate(values[:2], start=1):  # two validations each: no difference to measure
            eng.report(t, v, step)
        eng.tell(t, values[1], TrialState.COMPLETE)
    step, why = run(eng, [1.05, 1.06, 1.07])
    assert step is not None and why is None  # the median rule, as for a fresh trial


# the demo's line (2026-12-04, generation 4's objectives) ending in a lucky validation, and the first
# four objectives of three continuations of it (learning rates 3.4e-4, 2.3e-3, 2.9e-3)
DEMO_LINE = [2.22, 2.164, 2.199, 2.147, 2.172, 2.178, 2.167, 2.173, 2.193, 2.016]
DEMO_CONTINUATIONS = [[2.145, 2.131, 2.139, 2.172], [2.17, 2.152, 2.157, 2.185], [2.151, 2.131, 2.144, 2.176]]


def test_the_line_level_ignores_a_lucky_last_validation_and_follows_a_descent():
    assert line_level(DEMO_LINE, 2.016) == pytest.approx(2.151, abs=0.005)  # the plateau, not the dip
    assert line_level([3.0, 2.9, 2.8, 2.7, 2.6, 2.5], 2.5) == pytest.approx(2.5)  # a steady descent: its end
    assert line_level([2.6, 2.5, 2.2, 2.45, 2.5, 2.55], 2.2) == pytest.approx(2.5, abs=0.05)  # a dip mid-curve
    assert line_level([2.5, 2.4], 2.4) == 2.4 and line_level([], 1.0) == 1.0  # too few: the value itself


def test_continuations_as_good_as_the_line_run_on_against_its_level_not_its_best_validation():
    noise = 0.0448  # the study's validation noise then
    for values in DEMO_CONTINUATIONS:
        args = dict(sigmas=2.0, min_step=4, horizon=12)
        assert continuation_verdict(values, 4, 2.016, noise, **args) is not None  # pruned against the dip
        assert continuation_verdict(values, 4, line_level(DEMO_LINE, 2.016), noise, **args) is None
    worse = [2.3, 2.35, 2.4, 2.45]  # a continuation that does spoil the line is still pruned
    assert continuation_verdict(worse, 4, line_level(DEMO_LINE, 2.016), noise, sigmas=2.0, min_step=4, horizon=12)
