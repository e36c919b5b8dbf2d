"""The pure parts of benchmarks/tuner_vs_baselines.py: curves, time to target, the verdict, each arm's config."""

from __future__ import annotations

import argparse
import importlib.util
import math
from pathlib import Path

import pytest

from ttsops.errors import ConfigError

_PATH = Path(__file__).resolve().parents[3] / "benchmarks" / "tuner_vs_baselines.py"
_spec = importlib.util.spec_from_file_location("tuner_vs_baselines", _PATH)
assert _spec is not None and _spec.loader is not None
tvb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tvb)


@pytest.mark.parametrize(
    ("points", "curve"),
    [
        ([], []),
        ([(3.0, 2.0), (1.0, 5.0), (2.0, 4.0)], [(1.0, 5.0), (2.0, 4.0), (3.0, 2.0)]),  # sorted by CPU
        ([(1.0, 5.0), (2.0, 6.0), (3.0, 5.0), (4.0, 1.0)], [(1.0, 5.0), (4.0, 1.0)]),  # only improvements
        ([(1.0, math.inf), (2.0, math.nan), (3.0, 7.0)], [(3.0, 7.0)]),  # non-finite skipped
    ],
)
def test_best_so_far(points, curve):
    assert tvb.best_so_far(points) == curve


@pytest.mark.parametrize(
    ("target", "cpu"),
    [(5.0, 1.0), (4.5, 4.0), (1.0, 4.0), (0.5, None)],
)
def test_cpu_to_reach(target, cpu):
    assert tvb.cpu_to_reach([(1.0, 5.0), (4.0, 1.0)], target) == cpu


def test_best_at_budget():
    curve = [(1.0, 5.0), (4.0, 1.0)]
    assert tvb.best_at(curve, 3.9) == 5.0
    assert tvb.best_at(curve, 4.0) == 1.0
    assert tvb.best_at(curve, 0.5) == math.inf


@pytest.mark.parametrize(("wall", "cpu"), [(5.0, 0.0), (10.0, 0.0), (15.0, 2.0), (20.0, 4.0), (99.0, 4.0)])
def test_cpu_at_interpolates_and_clamps(wall, cpu):
    assert tvb.cpu_at([(10.0, 0.0), (20.0, 4.0)], wall) == pytest.approx(cpu)


def _arm(best, reach):
    return {"best_at_budget": best, "cpu_to_optuna_best_s": reach}


@pytest.mark.parametrize(
    ("smart", "default", "ratios", "accepted"),
    [
        ([_arm(1.0, 30.0), _arm(1.0, 50.0), _arm(1.0, 60.0)], [_arm(2.0, None)] * 3, [0.3, 0.5, 0.6], True),
        ([_arm(1.0, 30.0), _arm(1.0, 90.0), _arm(1.0, 90.0)], [_arm(2.0, None)] * 3, [0.3, 0.9, 0.9], False),
        (
            [_arm(1.0, None), _arm(1.0, 10.0), _arm(1.0, None)],
            [_arm(2.0, None)] * 3,
            [math.inf, 0.1, math.inf],
            False,
        ),
        (
            [_arm(1.0, 10.0)] * 3,
            [_arm(2.0, None), _arm(0.5, None), _arm(2.0, None)],
            [0.1] * 3,
            False,
        ),  # default wins once
    ],
)
def test_verdict(smart, default, ratios, accepted):
    runs = {
        "optuna": {s: _arm(1.5, 100.0) for s in range(3)},
        "smart": dict(enumerate(smart)),
        "default": dict(enumerate(default)),
    }
    v = tvb.verdict(runs)
    assert v["cpu_ratio_per_seed"] == pytest.approx(ratios)
    assert v["accepted"] is accepted


def test_json_safe_writes_null_for_non_finite():
    doc = {"ratios": [math.inf, 0.5], "best": math.nan, "curve": [(1.0, 2.0)], "n": 3}
    assert tvb.json_safe(doc) == {"ratios": [None, 0.5], "best": None, "curve": [[1.0, 2.0]], "n": 3}


def test_arm_config_applies_set_overrides_after_the_arms_own_changes(tmp_path):
    args = argparse.Namespace(n_trials=11, hparams="batch_size=12", set=[
        "core_engine.epochs_per_generation=12", "optimization.pruner=hyperband"])
    data = tvb.arm_config("optuna", 0, tmp_path, tmp_path / "data", args)
    assert data["core_engine"]["epochs_per_generation"] == 12
    assert data["optimization"]["pruner"] == "hyperband"  # --set wins over the arm's median pruner
    assert data["core_engine"]["resume_from_checkpoint"] is False  # the arm's other changes stay
    assert data["training"]["hparams"]["batch_size"] == 12
    args.set = ["core_engine.epochs_per_generation=[oops"]
    with pytest.raises(ConfigError, match="bad override"):
        tvb.arm_config("smart", 0, tmp_path, tmp_path / "data", args)
