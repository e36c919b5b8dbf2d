"""Shared detector types, smoothing, the patience family and divergence."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ttsops.config import AdaptivePatienceConfig
from ttsops.smart_tuner.early_stop.detectors import (
    Action,
    Reason,
    adaptive_patience,
    adaptive_patience_detector,
    divergence_detector,
    lr_annealing_detector,
    patience_detector,
    since_improvement,
    smooth,
    stage_of,
)


def first_stop(values, detector):
    """1-based number of validations seen when the detector first ends the run (None: never)."""
    for t in range(1, len(values) + 1):
        if detector(values[:t]).ends_run:
            return t
    return None


# Lightning's own table for EarlyStopping(patience, min_delta=0): (scores, patience, stop after)
@pytest.mark.parametrize(
    ("values", "patience", "stop_at"),
    [
        ([6, 5, 5, 5, 5, 5], 3, 5),
        ([6, 5, 4, 4, 3, 3], 1, 4),
        ([6, 5, 6, 5, 5, 5], 3, 5),
        ([6, 5, 4, 3, 2, 1], 2, None),
    ],
)
def test_patience_matches_lightning_table(values, patience, stop_at):
    assert first_stop(values, lambda v: patience_detector(v, patience, 0.0)) == stop_at


def test_patience_min_delta_is_relative():
    # 100 -> 99.6 is a 0.4% gain: not an improvement at min_delta 0.5%; 1.0 -> 0.994 (0.6%) is
    values = [100.0, 99.6, 99.7, 99.6]
    assert patience_detector(values, 3, 0.005).ends_run
    assert not patience_detector([1.0, 0.994, 0.995, 0.994], 3, 0.005).ends_run


def test_patience_stops_on_non_finite_like_lightning():
    r = patience_detector([1.0, 0.9, math.nan], 5, 0.0)
    assert (r.action, r.reason) == (Action.STOP, Reason.NON_FINITE)
    assert patience_detector([1.0, math.inf], 5, 0.0).reason is Reason.NON_FINITE


def test_patience_scores_rise_to_one():
    scores = [patience_detector([1.0] + [1.0] * k, 4, 0.0).score for k in range(5)]
    assert scores == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert [patience_detector([1.0] * (k + 1), 4, 0.0).ends_run for k in range(5)] == [False] * 4 + [True]


def test_since_improvement_skips_nan():
    assert since_improvement(np.array([3.0, 2.0, math.nan, 2.5]), 0.0) == (2, 2.0, 1)


def test_smooth_is_causal_and_kills_a_single_spike():
    rng = np.random.default_rng(0)
    x = 1 + 0.1 * rng.standard_normal(30)
    full = smooth(x, 0.3)
    for k in (1, 5, 17):
        np.testing.assert_allclose(smooth(x[:k], 0.3), full[:k])
    spiky = np.ones(10)
    spiky[5] = 50.0
    assert smooth(spiky, 0.3).max() == pytest.approx(1.0)


def test_smooth_carries_level_over_nan():
    s = smooth(np.array([1.0, math.nan, 1.0]), 0.5)
    assert s.tolist() == [1.0, 1.0, 1.0]
    assert math.isnan(smooth(np.array([math.nan, 2.0]), 0.5)[0])


@pytest.mark.parametrize(
    ("epoch", "stage", "patience"),
    [(0, "warmup", 8), (19.9, "warmup", 8), (20, "main", 5), (119, "main", 5), (120, "fine_tune", 4),
     (1000, "fine_tune", 4)],
)
def test_adaptive_patience_by_stage(epoch, stage, patience):
    assert adaptive_patience(epoch, AdaptivePatienceConfig()) == (stage, patience)


def test_adaptive_patience_capped_and_disabled():
    cfg = AdaptivePatienceConfig(initial_patience=10, max_patience=12)
    assert adaptive_patience(0, cfg) == ("warmup", 12)  # 10 x 1.5 capped at 12
    off = AdaptivePatienceConfig(enabled=False, initial_patience=7)
    assert adaptive_patience(500, off) == ("main", 7)
    only_main = AdaptivePatienceConfig(stages={"warmup": None, "main": {"epochs": 3, "multiplier": 1.0}, "fine_tune": None})
    assert stage_of(5, only_main) == "main"


def test_adaptive_patience_detector_uses_stage_of_latest_epoch():
    flat = [1.0] * 12
    warm = adaptive_patience_detector(flat, list(range(1, 13)), AdaptivePatienceConfig(), 0.005)
    main = adaptive_patience_detector(flat, list(range(31, 43)), AdaptivePatienceConfig(), 0.005)
    assert warm.details["patience"] == 8 and main.details["patience"] == 5
    assert warm.ends_run and main.ends_run and warm.reason is Reason.NO_IMPROVEMENT
    falling = adaptive_patience_detector(np.linspace(2, 1, 12), None, AdaptivePatienceConfig(), 0.005)
    assert not falling.ends_run and falling.reason is Reason.IMPROVING


def test_divergence_needs_consecutive_validations_above_factor():
    base = [1.0, 0.8, 0.6, 0.5]
    assert not divergence_detector(base + [2.0]).ends_run  # one spike
    assert not divergence_detector(base + [1.1, 1.2, 0.6]).ends_run  # a two-validation spike that recovered
    r = divergence_detector(base + [1.1, 1.5, 3.0])
    assert (r.action, r.reason) == (Action.PRUNE, Reason.DIVERGENCE)
    assert not divergence_detector(base + [0.7, 0.72, 0.75]).ends_run  # overfitting-sized rise
    assert divergence_detector(base + [0.9, 1.2], factor=1.5, consecutive=2).ends_run


def test_divergence_prunes_on_non_finite_loss_or_grad_norm():
    assert divergence_detector([1.0, math.nan]).reason is Reason.NON_FINITE
    assert divergence_detector([1.0, 0.9], grad_norm=[1.0, math.inf]).action is Action.PRUNE
    assert not divergence_detector([1.0, 0.9], grad_norm=[1.0, math.nan]).ends_run  # not logged here
    assert not divergence_detector([1.0, math.nan, 0.9, 0.8]).ends_run  # only the latest counts


def test_lr_annealing_while_the_rate_falls_until_it_is_spent():
    kw = dict(window=20, drop=0.2, min_fraction=0.05)
    constant = lr_annealing_detector([1e-3] * 40, **kw)
    assert constant.score == 0.0 and "steady" in constant.message
    decaying = 1e-3 * 0.5 ** (np.arange(60) / 33.0)  # halves every 33 validations (train.py's exponential decay)
    on = lr_annealing_detector(decaying[:40], **kw)
    assert on.score == 1.0 and on.reason is Reason.LR_ANNEALING and not on.ends_run and not on.voting
    step = np.r_[np.full(30, 1e-3), np.full(30, 5e-4)]  # one step decay at validation 31: a cooldown
    assert lr_annealing_detector(step[:49], **kw).score == 1.0  # the step's validation 31 is in the window
    assert lr_annealing_detector(step[:50], **kw).score == 0.0  # ... and now it is the window's first
    spent = 1e-3 * 0.5 ** (np.arange(200) / 20.0)  # below 5% of the peak after ~87 validations
    assert lr_annealing_detector(spent[:80], **kw).score == 1.0
    off = lr_annealing_detector(spent[:100], **kw)
    assert off.score == 0.0 and "spent" in off.message
    warmup = np.linspace(1e-4, 1e-3, 30)  # a rising rate is not annealing
    rising = lr_annealing_detector(warmup, **kw)
    assert rising.score == 0.0 and rising.details["fell"] == 0.0
    # a warm-up inside the window, then a decay: judged from the highest rate in the window
    assert lr_annealing_detector(np.r_[np.linspace(1e-4, 1e-3, 10), 1e-3 * 0.9 ** np.arange(1, 11)], **kw).score == 1.0
    # the rate current when the window began counts even if it was logged before it (a gap)
    gap = np.r_[np.full(10, 1e-3), np.full(25, np.nan), [6e-4]]
    assert lr_annealing_detector(gap, **kw).details["fell"] == pytest.approx(0.4)
    # NaN = not logged at this validation (train.py logs training metrics every N steps)
    sparse = np.where(np.arange(40) % 3 == 0, decaying[:40], np.nan)
    assert lr_annealing_detector(sparse, **kw).score == 1.0
    assert lr_annealing_detector(None, **kw).reason is Reason.MISSING_METRIC
    assert lr_annealing_detector([np.nan, 1e-3], **kw).reason is Reason.INSUFFICIENT_DATA


def test_results_serialise_to_strict_json():
    r = divergence_detector([1.0, math.nan])
    d = r.to_dict()
    assert json.loads(json.dumps(d, allow_nan=False))["reason"] == "non_finite"
    assert d["details"]["value"] is None
