"""OptimizationEngine on real Optuna storages (in-memory, journal file, SQLite) and a cheap
synthetic objective: samplers, pruners, search space, report/tell rules, heartbeat, resume."""

from __future__ import annotations

import logging
import math
import warnings

import pytest
from optuna.trial import TrialState

from ttsops.config import OptimizationConfig, ParamSpec
from ttsops.errors import ConfigError, TunerError
from ttsops.smart_tuner.search.opt_engine import HEARTBEAT_ATTR, RETRY_OF_ATTR, OptimizationEngine
from ttsops.smart_tuner.search.samplers import (
    PRUNERS,
    SAMPLERS,
    BracketedHyperbandPruner,
    default_n_brackets,
    natural_n_brackets,
)

SPACE = {
    "learning_rate": ParamSpec(type="loguniform", low=1e-5, high=1e-2),
    "dropout_decoder": ParamSpec(type="uniform", low=0.0, high=0.5),
    "n_layers": ParamSpec(type="int", low=1, high=4),
    "mel_fmax": ParamSpec(type="choice", choices=[7600, 8000, None]),
}
NUMERIC = {k: v for k, v in SPACE.items() if v.type != "choice"}


def cfg(sampler="tpe", pruner="none", startup=4, hb=(1, 9, 3), **kw) -> OptimizationConfig:
    return OptimizationConfig(
        sampler=sampler,
        pruner=pruner,
        tpe={"n_startup_trials": startup, **kw},
        hyperband={"min_resource": hb[0], "max_resource": hb[1], "reduction_factor": hb[2]},
        seed=7,
    )


def loss(params: dict, epoch: int = 9) -> float:
    """Cheap synthetic 'validation loss': best at lr=1e-3, dropout 0.1, 2 layers, mel_fmax None."""
    base = (
        (math.log10(params["learning_rate"]) + 3.0) ** 2
        + (params["dropout_decoder"] - 0.1) ** 2
        + 0.05 * abs(params.get("n_layers", 2) - 2)
        + (0.0 if params.get("mel_fmax") is None else 0.1)
    )
    return base + 1.0 / epoch


def run_study(engine: OptimizationEngine, n: int, epochs: int = 9) -> dict[str, int]:
    counts = {"complete": 0, "pruned": 0}
    for _ in range(n):
        trial = engine.ask()
        state, value = TrialState.COMPLETE, math.nan
        for epoch in range(1, epochs + 1):
            value = loss(trial.params, epoch)
            if engine.report(trial, value, epoch):
                state = TrialState.PRUNED
                break
        engine.tell(trial, value, state)
        counts["complete" if state == TrialState.COMPLETE else "pruned"] += 1
    return counts


def test_registries_are_explicit():
    assert set(SAMPLERS) == {"tpe", "cma_es", "bohb", "random"}
    assert set(PRUNERS) == {"hyperband", "median", "none"}


@pytest.mark.parametrize("sampler", ["tpe", "cma_es", "bohb", "random"])
def test_short_study_improves_on_its_start(sampler):
    pruner = "hyperband" if sampler == "bohb" else "none"
    eng = OptimizationEngine(cfg(sampler, pruner), SPACE, storage="memory", study_name=sampler, n_trials=24)
    counts = run_study(eng, 24)
    done = [t for t in eng.study.trials if t.state == TrialState.COMPLETE]
    first = min(t.value for t in done[:4])
    assert eng.best() is not None and eng.best().value <= first
    assert eng.best().value < 0.6  # optimum is 1/9; a random point averages > 1
    if sampler == "bohb":
        assert counts["pruned"] >= 1 and eng.pruner_name == "hyperband"


def test_cma_es_models_numeric_params_and_warns_once(caplog):
    caplog.set_level(logging.WARNING)
    eng = OptimizationEngine(cfg("cma_es", startup=2), SPACE, storage="memory", study_name="c")
    run_study(eng, 10, epochs=1)
    cma = [t for t in eng.study.trials if any(k.startswith("cma:") for k in t.system_attrs)]
    assert cma, "CMA-ES never sampled relatively"
    warned = [r for r in caplog.records if "categorical" in r.getMessage()]
    assert len(warned) == 1 and "mel_fmax" in warned[0].getMessage()
    assert not [r for r in caplog.records if r.name.startswith("optuna") and "independent" in r.getMessage()]


def test_cma_es_without_categoricals_does_not_warn(caplog):
    caplog.set_level(logging.WARNING)
    OptimizationEngine(cfg("cma_es"), NUMERIC, storage="memory", study_name="c")
    assert not [r for r in caplog.records if "categorical" in r.getMessage()]


def test_bohb_forces_hyperband(caplog):
    eng = OptimizationEngine(cfg("bohb", "median"), SPACE, storage="memory", study_name="b")
    assert isinstance(eng.study.pruner, BracketedHyperbandPruner)
    assert "ignored" in caplog.text


def test_magic_clip_off_is_passed_without_a_deprecation_leak():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        eng = OptimizationEngine(cfg(consider_magic_clip=False), SPACE, storage="memory", study_name="m")
    assert not [w for w in caught if issubclass(w.category, FutureWarning)]
    assert eng.study.sampler._parzen_estimator_parameters.consider_magic_clip is False


def test_search_space_types_and_null_choice():
    eng = OptimizationEngine(cfg("random"), SPACE, storage="memory", study_name="s")
    seen = [eng.ask().params for _ in range(40)]
    assert all(1e-5 <= p["learning_rate"] <= 1e-2 for p in seen)
    assert all(0.0 <= p["dropout_decoder"] <= 0.5 for p in seen)
    assert {p["n_layers"] for p in seen} <= {1, 2, 3, 4} and all(isinstance(p["n_layers"], int) for p in seen)
    assert {p["mel_fmax"] for p in seen} == {7600, 8000, None}
    dist = eng.study.trials[0].distributions
    assert dist["learning_rate"].log and not dist["dropout_decoder"].log


@pytest.mark.parametrize(
    ("space", "match"),
    [
        ({"x": ParamSpec(type="choice", choices=[[1, 2], 3])}, "search_space.x"),
        ({"x": ParamSpec(type="int", low=0.5, high=3)}, "search_space.x"),
        ({"x": ParamSpec(type="loguniform", low=1e-3, high=1.0, step=0.1)}, "search_space.x"),
        ({}, "empty"),
    ],
)
def test_bad_search_space_is_refused(space, match):
    with pytest.raises(ConfigError, match=match):
        OptimizationEngine(cfg(), space, storage="memory", study_name="x")


@pytest.mark.parametrize(
    ("n_trials", "startup", "hb", "expected"),
    [
        (100, 15, (1, 80, 3), 3),
        (30, 15, (1, 80, 3), 1),
        (12, 2, (1, 8, 2), 3),
        (None, 15, (1, 80, 3), 4),
        (1000, 0, (1, 80, 3), 4),
        (6, 2, (1, 8, 2), 1),
    ],
)
def test_default_n_brackets_table(n_trials, startup, hb, expected):
    assert default_n_brackets(n_trials, startup, *hb) == expected


def test_issue_trap_1_80_3_has_four_natural_brackets():
    assert natural_n_brackets(1, 80, 3) == 4
    assert BracketedHyperbandPruner(1, 80, 3, 4).n_brackets == 4


@pytest.mark.parametrize("n", [1, 2])
def test_n_brackets_configurable(n):
    eng = OptimizationEngine(
        cfg(pruner="hyperband", hb=(1, 27, 3)), SPACE, storage="memory", study_name="h", n_brackets=n
    )
    assert eng.study.pruner.n_brackets == n == eng.n_brackets


def test_n_brackets_out_of_range_is_refused():
    with pytest.raises(ConfigError, match="n_brackets=5"):
        BracketedHyperbandPruner(1, 27, 3, 5)


def test_repeated_or_decreasing_step_is_refused(caplog):
    eng = OptimizationEngine(cfg(), SPACE, storage="memory", study_name="r")
    trial = eng.ask()
    assert eng.report(trial, 1.0, 1) is False
    assert eng.report(trial, 0.5, 2) is False
    eng.report(trial, 0.1, 2)
    eng.report(trial, 0.1, 1)
    assert "step 2 refused" in caplog.text and "step 1 refused" in caplog.text
    assert eng.study.trials[0].intermediate_values == {1: 1.0, 2: 0.5}
    assert eng.last_step(trial) == 2


def test_nan_report_is_worst_and_nan_tell_fails():
    eng = OptimizationEngine(cfg(), SPACE, storage="memory", study_name="n")
    trial = eng.ask()
    eng.report(trial, math.nan, 1)
    assert eng.study.trials[0].intermediate_values == {1: math.inf}
    eng.tell(trial, math.nan, TrialState.COMPLETE)
    assert eng.study.trials[0].state == TrialState.FAIL
    with pytest.raises(TunerError, match="already finished"):
        eng.tell(trial.number, 1.0, TrialState.COMPLETE)


def test_median_pruner_prunes_a_bad_trial():
    eng = OptimizationEngine(cfg(pruner="median"), SPACE, storage="memory", study_name="md")
    for v in (1.0, 1.1, 0.9, 1.0, 1.05):
        t = eng.ask()
        for step in (1, 2, 3):
            eng.report(t, v, step)
        eng.tell(t, v, TrialState.COMPLETE)
    bad = eng.ask()
    assert eng.report(bad, 5.0, 1) is True


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_heartbeat_stale_detection_and_requeue(tmp_path):
    clock = Clock()
    storage = f"journal:{tmp_path / 'study.log'}"
    eng = OptimizationEngine(cfg(), SPACE, storage=storage, study_name="hb", clock=clock)
    alive, dead = eng.ask(), eng.ask()
    clock.t += 100
    eng.heartbeat(alive)
    assert eng.study.trials[alive.number].user_attrs[HEARTBEAT_ATTR] == clock.t
    clock.t += 30
    assert [t.number for t in eng.stale_running_trials(60)] == [dead.number]
    # a second worker on the same storage recovers it; the first then finds nothing to do
    other = OptimizationEngine(cfg(), SPACE, storage=storage, study_name="hb", clock=clock)
    assert other.recover_stale(60) == [dead.number]
    assert eng.recover_stale(60) == []
    assert eng.study.trials[dead.number].state == TrialState.FAIL
    retry = eng.ask()  # the re-queued trial comes first, with the same params
    assert retry.params == dead.params and retry.number == 2
    assert eng.study.trials[2].user_attrs[RETRY_OF_ATTR] == dead.number
    clock.t += 1000  # the retry dies too: max_retry=1 -> failed, not re-queued again
    eng.heartbeat(alive)
    assert eng.recover_stale(60, state=TrialState.PRUNED) == [2]
    assert eng.study.trials[2].state == TrialState.PRUNED
    assert len(eng.study.trials) == 3


def test_resume_continues_the_study_and_reports_by_number(tmp_path):
    storage = (
        f"journal:{tmp_path / 'optuna.log'}"  # SQLite: tests/integration/.../test_opt_engine_postgres.py
    )
    first = OptimizationEngine(cfg(), SPACE, storage=storage, study_name="res")
    run_study(first, 3, epochs=2)
    orphan = first.ask()
    first.report(orphan, 0.9, 1)
    best = first.best().value
    again = OptimizationEngine(cfg(), SPACE, storage=storage, study_name="res")  # a new tuner process
    assert len(again.study.trials) == 4 and again.best().value == best
    assert again.last_step(orphan.number) == 1
    assert again.report(orphan.number, 0.8, 1) is False  # refused: step 1 already reported
    again.report(orphan.number, 0.05, 2)
    again.tell(orphan.number, 0.05, TrialState.COMPLETE)
    assert again.best().number == orphan.number
    assert again.ask().number == 4


def test_resume_with_other_direction_is_refused(tmp_path):
    storage = f"journal:{tmp_path / 'j.log'}"
    OptimizationEngine(cfg(), SPACE, storage=storage, study_name="d")
    with pytest.raises(TunerError, match="direction"):
        OptimizationEngine(cfg(), SPACE, storage=storage, study_name="d", direction="maximize")


@pytest.mark.parametrize(
    ("storage", "match"), [("optuna.db", "expected an RDB URL"), ("journal:", "journal:PATH")]
)
def test_bad_storage_is_refused(storage, match):
    with pytest.raises(ConfigError, match=match):
        OptimizationEngine(cfg(), SPACE, storage=storage, study_name="x")


def test_unreachable_database_retries_then_one_line_without_password():
    from ttsops.smart_tuner.search.opt_engine import make_storage

    sleeps: list[float] = []
    with pytest.raises(TunerError) as err:
        make_storage("postgresql://ttsops:s3cret@127.0.0.1:1/none", sleep=sleeps.append)
    assert sleeps == [0.5, 1.0]
    assert "s3cret" not in str(err.value) and "postgresql://***@127.0.0.1:1/none" in str(err.value)
    assert "\n" not in str(err.value)


def test_resume_keeps_the_studys_bracket_count(tmp_path, caplog):
    storage = f"journal:{tmp_path / 'b.log'}"
    c = cfg(pruner="hyperband", hb=(1, 27, 3))
    assert OptimizationEngine(c, SPACE, storage=storage, study_name="b", n_trials=8).n_brackets == 1
    again = OptimizationEngine(c, SPACE, storage=storage, study_name="b", n_trials=100)
    assert again.n_brackets == again.study.pruner.n_brackets == 1  # 100 trials alone would give 4
    forced = OptimizationEngine(c, SPACE, storage=storage, study_name="b", n_brackets=2)
    assert forced.study.pruner.n_brackets == 2 and "resumed with" in caplog.text


def test_workers_with_one_seed_sample_differently_when_given_ids(tmp_path):
    storage = f"journal:{tmp_path / 'w.log'}"
    same = [
        OptimizationEngine(cfg("random"), SPACE, storage=storage, study_name=f"s{i}").ask().params
        for i in range(2)
    ]
    assert same[0] == same[1]  # the trap: one config, one seed, same start-up points
    ids = [
        OptimizationEngine(cfg("random"), SPACE, storage=storage, study_name=f"w{i}", worker_id=f"host{i}:1")
        .ask()
        .params
        for i in range(2)
    ]
    assert ids[0] != ids[1]
