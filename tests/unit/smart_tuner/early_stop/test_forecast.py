"""Gaussian-process learning-curve forecast."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ttsops.smart_tuner.early_stop.detectors import Reason
from ttsops.smart_tuner.early_stop.forecast import forecast_detector, gp_forecast


def decay(n: int) -> np.ndarray:
    t = np.arange(1, n + 1)
    return 0.5 + 1.5 * np.exp(-t / 12)


@pytest.mark.parametrize("n", [15, 25, 40])
def test_forecast_brackets_true_future_of_exponential_decay(n):
    truth = decay(n + 15)
    rng = np.random.default_rng(n)
    y = truth[:n] * (1 + 0.003 * rng.standard_normal(n))
    fc = gp_forecast(y, horizon=15, min_delta=0.005, inflation=2.0)
    assert fc is not None and fc.transform == "loglog"
    assert fc.lower <= truth[-1] <= fc.upper
    assert fc.upper / fc.lower < 1.6  # an informative band, not "anything goes"


def test_improvement_probable_early_unlikely_on_a_flat_tail():
    y = decay(80)
    early = gp_forecast(y[:12], horizon=15, min_delta=0.005)
    rng = np.random.default_rng(0)
    flat = 0.5 * (1 + 0.004 * rng.standard_normal(40))
    late = gp_forecast(flat, horizon=15, min_delta=0.005)
    assert early.p_improve > 0.9
    assert late.p_improve < 0.5


def test_detector_scores_and_reasons():
    falling = forecast_detector(decay(12), horizon=15, min_delta=0.005)
    assert falling.reason is Reason.FORECAST_IMPROVEMENT and not falling.ends_run
    flat = forecast_detector(np.full(30, 0.5) + 1e-4 * np.sin(np.arange(30)), horizon=15, min_delta=0.005)
    assert flat.reason is Reason.FORECAST_NO_IMPROVEMENT and flat.ends_run
    assert flat.score == pytest.approx(1 - flat.details["p_improve"])


def test_nan_points_dropped_and_short_series_abstain():
    y = list(decay(20))
    y[5] = math.nan
    y[9] = math.inf
    assert gp_forecast(y, horizon=10, min_delta=0.005) is not None
    r = forecast_detector([1.0, math.nan, 0.9], horizon=10, min_delta=0.005)
    assert not r.voting and r.reason is Reason.INSUFFICIENT_DATA


def test_reusing_theta_without_optimising_gives_the_same_forecast():
    y = decay(30)
    first = gp_forecast(y, horizon=10, min_delta=0.005)
    again = gp_forecast(y, horizon=10, min_delta=0.005, theta=first.theta, optimize=False)
    assert again.mean == pytest.approx(first.mean, rel=1e-6)


def test_non_positive_values_use_the_linear_scale():
    fc = gp_forecast(np.linspace(1.0, -1.0, 20), horizon=5, min_delta=0.005)
    assert fc.transform == "linear" and fc.mean < -1.0
