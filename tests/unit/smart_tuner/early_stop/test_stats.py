"""Mann-Kendall (+ Hamed-Rao, Sen's slope) and CUSUM on synthetic curves."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from ttsops.smart_tuner.early_stop.detectors import Reason
from ttsops.smart_tuner.early_stop.stats import (
    cusum_changepoint,
    cusum_detector,
    cusum_improvements,
    mann_kendall,
    sens_slope,
    training_progress_detector,
    trend_detector,
)


def ar1(rng, n, phi, sigma=1.0):
    e = np.zeros(n)
    for i in range(n):
        e[i] = (phi * e[i - 1] if i else 0.0) + sigma * rng.standard_normal()
    return e


def test_clear_trend_detected_with_slope_and_ci():
    rng = np.random.default_rng(1)
    y = 2.0 - 0.05 * np.arange(30) + 0.05 * rng.standard_normal(30)
    mk = mann_kendall(y)
    assert mk.p_decreasing < 1e-6 and mk.p_increasing > 0.99
    assert mk.slope == pytest.approx(-0.05, abs=0.005)
    assert mk.slope_low <= -0.05 <= mk.slope_high


def test_plain_mk_matches_kendall_tau_against_time():
    rng = np.random.default_rng(2)
    y = rng.standard_normal(25) + 0.03 * np.arange(25)
    mk = mann_kendall(y, autocorrelation=False)
    tau = stats.kendalltau(np.arange(25), y, method="asymptotic")
    assert mk.tau == pytest.approx(tau.statistic)
    # MK's continuity correction makes its p a little larger than scipy's uncorrected one
    assert 2 * min(mk.p_decreasing, mk.p_increasing) == pytest.approx(tau.pvalue, rel=0.1)


def test_flat_noise_is_not_a_trend():
    rng = np.random.default_rng(3)
    rejections = sum(mann_kendall(rng.standard_normal(30)).p_decreasing < 0.05 for _ in range(300))
    assert rejections / 300 <= 0.08  # one-sided 5% test


def test_hamed_rao_controls_false_trends_in_autocorrelated_noise():
    rng = np.random.default_rng(4)
    plain = corrected = 0
    for _ in range(200):
        y = ar1(rng, 40, 0.8)
        plain += mann_kendall(y, autocorrelation=False).p_decreasing < 0.05
        corrected += mann_kendall(y).p_decreasing < 0.05
    assert plain / 200 > 0.15  # plain MK is fooled by autocorrelation (nominal 5%) ...
    assert corrected / 200 <= 0.7 * plain / 200  # ... the correction removes a good part of that


def test_mk_rejects_non_finite_and_short_input():
    with pytest.raises(ValueError, match="finite"):
        mann_kendall([1.0, math.nan, 2.0, 3.0])
    with pytest.raises(ValueError, match=">= 3"):
        mann_kendall([1.0, 2.0])


def test_sens_slope_ignores_outliers():
    y = 3.0 + 0.5 * np.arange(20)
    y[[3, 11]] = [100.0, -50.0]
    slope, intercept = sens_slope(y)
    assert slope == pytest.approx(0.5) and intercept == pytest.approx(3.0)


@pytest.mark.parametrize(
    ("kind", "reason", "share"),
    [("falling", Reason.IMPROVING, 1.0), ("flat", Reason.PLATEAU, 0.8), ("rising", Reason.OVERFITTING, 1.0)],
)
def test_trend_detector_table(kind, reason, share):
    t = np.arange(40)
    base = {"falling": 1.0 - 0.005 * t, "flat": np.ones(40), "rising": 0.5 + 0.004 * t}[kind]
    hits = 0
    for seed in range(20):
        noisy = base * (1 + 0.002 * np.random.default_rng(seed).standard_normal(40))
        r = trend_detector(noisy, window=30, horizon=15, min_delta=0.005)
        hits += r.reason is reason and r.ends_run == (reason is not Reason.IMPROVING)
    assert hits / 20 >= share


def test_trend_detector_wants_more_evidence_on_noisier_flats():
    # the optimistic end of Sen's CI must rule out a min_delta gain: noise widens it
    plateau = {}
    for sigma in (0.001, 0.01):
        plateau[sigma] = sum(
            trend_detector(1 + sigma * np.random.default_rng(s).standard_normal(30), window=30, horizon=15,
                           min_delta=0.005).reason is Reason.PLATEAU for s in range(20))
    assert plateau[0.001] >= 18 and plateau[0.01] <= 6


def test_trend_detector_drops_nan_and_abstains_when_short():
    r = trend_detector([1.0, math.nan, 0.9, math.nan, 0.8], window=20, horizon=15, min_delta=0.005)
    assert not r.voting and r.reason is Reason.INSUFFICIENT_DATA
    y = list(np.linspace(1.0, 0.5, 20))
    y[7] = math.nan
    assert trend_detector(y, window=20, horizon=15, min_delta=0.005).reason is Reason.IMPROVING


def test_cusum_changepoint_finds_level_shift():
    rng = np.random.default_rng(6)
    y = np.r_[np.ones(30), 0.9 * np.ones(25)] + 0.01 * rng.standard_normal(55)
    k, strength = cusum_changepoint(y)
    assert abs(k - 30) <= 2 and strength > 2
    _, flat_strength = cusum_changepoint(0.01 * rng.standard_normal(55))
    assert flat_strength < strength / 3


def test_cusum_chart_confirms_drop_near_its_start():
    rng = np.random.default_rng(7)
    y = np.log(np.r_[np.ones(30), 0.95 * np.ones(20)] * (1 + 0.005 * rng.standard_normal(50)))
    chart = cusum_improvements(y, delta=0.01)
    assert len(chart.alarms) == 1 and 30 <= chart.alarms[0] <= 34
    assert abs(chart.changepoints[0] - 30) <= 2


def test_cusum_detector_plateau_vs_falling():
    rng = np.random.default_rng(8)
    t = np.arange(40)
    plateau = np.r_[np.linspace(2, 1, 20), np.ones(20)] * (1 + 0.003 * rng.standard_normal(40))
    falling = 2 * np.exp(-t / 30) * (1 + 0.003 * rng.standard_normal(40))
    p = cusum_detector(plateau, patience=8, min_delta=0.005)
    f = cusum_detector(falling, patience=8, min_delta=0.005)
    assert p.reason is Reason.PLATEAU and p.ends_run
    assert f.reason is Reason.IMPROVING and not f.ends_run
    assert abs(p.details["since_last_shift"] - 20) <= 4


def test_training_progress_falling_vs_stalled():
    rng = np.random.default_rng(3)
    t = np.arange(40, dtype=float)
    falling = 3.0 * np.exp(-t / 60) * (1 + 0.01 * rng.standard_normal(40))
    flat = 2.0 * (1 + 0.01 * rng.standard_normal(40))
    kw = dict(window=20, horizon=15, floor=0.05)
    on = training_progress_detector(falling, **kw)
    off = training_progress_detector(flat, **kw)
    assert on.score == 1.0 and on.details["fall"] >= 0.05 and not on.voting and not on.ends_run
    assert off.score == 0.0 and off.reason is Reason.PLATEAU and abs(off.details["fall"]) < 0.05
    # a fall below the floor is "stalled" even when significant
    assert training_progress_detector(falling, window=20, horizon=15, floor=0.5).score == 0.0


def test_training_progress_collapses_repeats_and_abstains_without_data():
    # train.py logs train_loss every N steps: neighbouring validations repeat the last value
    logged = 3.0 * np.exp(-np.arange(8) / 6)
    repeated = np.repeat(logged, 3)[:20]
    r = training_progress_detector(repeated, window=20, horizon=15, floor=0.05)
    assert r.details["points"] == 7 and r.score == 1.0
    assert training_progress_detector(None, window=20, horizon=15, floor=0.05).reason is Reason.INSUFFICIENT_DATA
    flat_nan = training_progress_detector([np.nan] * 30, window=20, horizon=15, floor=0.05)
    assert flat_nan.reason is Reason.INSUFFICIENT_DATA and flat_nan.score == 0.0
