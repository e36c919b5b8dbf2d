"""Statistical detectors: Mann-Kendall trend test with Sen's slope, and CUSUM change detection.

Mann-Kendall (rank based, robust to outliers) asks "is the curve still falling, significantly?";
plain MK assumes independent points, which learning curves are not (a good step is followed by good
steps). We use the Hamed & Rao (1998) variance correction: the Sen-detrended series is ranked, its
significant rank autocorrelations inflate Var(S) by ``n/n*``. We never let the correction make the
test *more* liberal than plain MK (n/n* is floored at 1). Sen's slope (median of pairwise slopes)
comes with Gilbert's confidence interval computed from the same corrected variance. The correction
is partial on short series: on 40 points of AR(1) noise with phi = 0.8 a nominal 5% one-sided test
fires ~23% of the time uncorrected and ~15% corrected (rank autocorrelations of a short detrended
series are biased low), one more reason the test is only one voice in the vote.

CUSUM (Page 1954) is run as a sequential "improvement chart" on log values: it accumulates evidence
that the level has dropped by at least ``min_delta`` below the reference level; each alarm is a
confirmed improvement (a level shift) and moves the reference. Validations since the last confirmed
shift measure a plateau; the chart also estimates where each shift started. :func:`cusum_changepoint`
is the offline single change-point estimate (argmax of the centred cumulative sum).

Caveat: p-values are per call; the controller calls after every validation, so they are used as
one voice in a vote with a practical-significance rule, never alone to end a run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from ttsops.smart_tuner.early_stop.detectors import (
    DetectorResult,
    Reason,
    abstain,
    as_array,
    finite_points,
    result,
)


@dataclass(frozen=True)
class MannKendall:
    n: int
    s: float
    var_s: float  # after the autocorrelation correction
    correction: float  # n/n* (>= 1)
    z: float
    p_decreasing: float  # one-sided
    p_increasing: float
    tau: float
    slope: float  # Sen's slope, per unit of x
    slope_low: float  # Gilbert's CI at the test's alpha
    slope_high: float
    intercept: float


def _pairwise_slopes(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    i, j = np.triu_indices(y.size, k=1)
    dx = x[j] - x[i]
    ok = dx != 0
    return np.sort((y[j] - y[i])[ok] / dx[ok])


def sens_slope(y: Sequence[float] | np.ndarray, x: Sequence[float] | np.ndarray | None = None) -> tuple[float, float]:
    """(slope, intercept): median of pairwise slopes; intercept = median(y - slope * x)."""
    yy = as_array(y)
    xx = np.arange(yy.size, dtype=float) if x is None else as_array(x)
    if yy.size < 2:
        return 0.0, float(yy[0]) if yy.size else 0.0
    slope = float(np.median(_pairwise_slopes(yy, xx)))
    return slope, float(np.median(yy - slope * xx))


def _mk_variance(y: np.ndarray) -> float:
    n = y.size
    _, counts = np.unique(y, return_counts=True)
    ties = float(np.sum(counts * (counts - 1) * (2 * counts + 5)))
    return (n * (n - 1) * (2 * n + 5) - ties) / 18.0


def _hamed_rao_factor(y: np.ndarray, x: np.ndarray, slope: float, alpha: float) -> float:
    n = y.size
    ranks = stats.rankdata(y - slope * x)
    r = ranks - ranks.mean()
    denom = float(np.dot(r, r))
    if n < 4 or denom == 0:
        return 1.0
    bound = stats.norm.ppf(1 - alpha / 2) / math.sqrt(n)
    total = 0.0
    for k in range(1, n - 2):
        rho = float(np.dot(r[:-k], r[k:])) / denom
        if abs(rho) > bound:
            total += (n - k) * (n - k - 1) * (n - k - 2) * rho
    return max(1.0, 1.0 + 2.0 * total / (n * (n - 1) * (n - 2)))


def mann_kendall(
    y: Sequence[float] | np.ndarray, x: Sequence[float] | np.ndarray | None = None, *,
    alpha: float = 0.05, autocorrelation: bool = True,
) -> MannKendall:
    """Mann-Kendall trend test (normal approximation, tie-corrected) with Sen's slope and CI.

    ``autocorrelation=True`` applies the Hamed-Rao variance correction. Needs >= 3 finite points
    (callers filter non-finite values first); x must be increasing when given.
    """
    yy = as_array(y)
    n = yy.size
    if n < 3 or not np.isfinite(yy).all():
        raise ValueError(f"mann_kendall needs >= 3 finite values, got {n} (finite: {int(np.isfinite(yy).sum())})")
    xx = np.arange(n, dtype=float) if x is None else as_array(x)
    i, j = np.triu_indices(n, k=1)
    s = float(np.sum(np.sign(yy[j] - yy[i])))
    slopes = _pairwise_slopes(yy, xx)
    slope = float(np.median(slopes))
    var0 = _mk_variance(yy)
    factor = _hamed_rao_factor(yy, xx, slope, alpha) if autocorrelation else 1.0
    var = var0 * factor
    if var <= 0:
        z = 0.0
    else:
        z = (s - np.sign(s)) / math.sqrt(var)
    c = stats.norm.ppf(1 - alpha / 2) * math.sqrt(max(var, 0.0))
    m = slopes.size
    lo_pos, hi_pos = (m - c) / 2 - 1, (m + c) / 2  # Gilbert (1987), 0-based ranks
    pos = np.arange(m)
    slope_low = float(np.interp(max(0.0, lo_pos), pos, slopes))
    slope_high = float(np.interp(min(m - 1.0, hi_pos), pos, slopes))
    return MannKendall(
        n=n, s=s, var_s=var, correction=factor, z=float(z),
        p_decreasing=float(stats.norm.cdf(z)), p_increasing=float(stats.norm.sf(z)),
        tau=s / (n * (n - 1) / 2), slope=slope, slope_low=slope_low, slope_high=slope_high,
        intercept=float(np.median(yy - slope * xx)),
    )


def _sen_level(mk: MannKendall, idx: np.ndarray, y: np.ndarray) -> float:
    """The Sen line's level at the latest point (the scale for relative gains), never 0."""
    return abs(mk.intercept + mk.slope * idx[-1]) or abs(float(np.median(y))) or 1.0


def trend_detector(
    values: Sequence[float] | np.ndarray, *, window: int, horizon: float, min_delta: float,
    alpha: float = 0.05, min_points: int = 6,
) -> DetectorResult:
    """Is the curve (lower is better) still falling by a worthwhile amount?

    On the last ``window`` finite points: the optimistic improvement over the next ``horizon``
    validations is ``-slope_low * horizon / level`` (Sen's slope at the favourable end of its CI,
    relative to the Sen line's current level). Score ``1 - gain / min_delta`` clipped to [0, 1]:
    even the optimistic rate gains less than ``min_delta`` -> plateau. A significant rising trend
    (MK p < alpha and the whole CI above 0) is overfitting (score 1).
    """
    name = "mann_kendall"
    idx, y = finite_points(as_array(values))
    idx, y = idx[-window:], y[-window:]
    if y.size < min_points:
        return abstain(name, Reason.INSUFFICIENT_DATA, f"{y.size} finite values, need {min_points}")
    mk = mann_kendall(y, idx.astype(float), alpha=alpha)
    level = _sen_level(mk, idx, y)
    gain = -mk.slope_low * horizon / level
    info: dict[str, Any] = dict(p_decreasing=mk.p_decreasing, p_increasing=mk.p_increasing, z=mk.z,
                sen_slope_rel=mk.slope / level, slope_ci_rel=[mk.slope_low / level, mk.slope_high / level],
                hamed_rao_factor=mk.correction, optimistic_gain=gain, window=int(y.size))
    if mk.p_increasing < alpha and mk.slope_low > 0:
        return result(name, 1.0, Reason.OVERFITTING,
                      f"rising significantly (MK p={mk.p_increasing:.3g}, Sen {mk.slope / level:+.2%}/validation)",
                      **info)
    score = 1.0 - gain / min_delta if min_delta > 0 else (1.0 if gain <= 0 else 0.0)
    if score >= 0.5:
        msg = (f"plateau: at best {gain:.2%} more in {horizon:g} validations (< {min_delta:.2%}); "
               f"MK p(falling)={mk.p_decreasing:.3g}")
        return result(name, score, Reason.PLATEAU, msg, **info)
    msg = (f"still falling: up to {gain:.2%} in {horizon:g} validations, Sen "
           f"{mk.slope / level:+.2%}/validation, MK p(falling)={mk.p_decreasing:.3g}")
    return result(name, score, Reason.IMPROVING, msg, **info)


# --- CUSUM --------------------------------------------------------------------------------------
def cusum_changepoint(y: Sequence[float] | np.ndarray) -> tuple[int, float]:
    """Offline single change point: (index of the first point of the new level, strength).

    Strength is max |cumsum(y - mean)| divided by (std * sqrt(n)) of the series, ~N-free: values
    above ~1.2 are unlikely without a shift (the Kolmogorov-type bound of the Brownian bridge)."""
    yy = as_array(y)
    if yy.size < 3:
        return 0, 0.0
    c = np.cumsum(yy - yy.mean())[:-1]
    k = int(np.argmax(np.abs(c)))
    sd = float(np.std(np.diff(yy)) / math.sqrt(2)) or float(np.std(yy)) or 1.0
    return k + 1, float(abs(c[k]) / (sd * math.sqrt(yy.size)))


@dataclass(frozen=True)
class CusumChart:
    alarms: tuple[int, ...]  # indices at which a downward shift >= delta was confirmed
    changepoints: tuple[int, ...]  # estimated start of each confirmed shift
    statistic: float  # current chart value (in units of h: 1.0 = alarm)
    sigma: float


def noise_sigma(y: np.ndarray) -> float:
    """Robust noise scale of a curve: MAD of the first differences / sqrt(2) (a smooth trend barely
    moves the median difference, so this measures the noise, not the slope)."""
    if y.size < 3:
        return 0.0
    d = np.diff(y)
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / math.sqrt(2))


def cusum_improvements(y: Sequence[float] | np.ndarray, *, delta: float, h: float = 5.0,
                       sigma: float | None = None) -> CusumChart:
    """Sequential one-sided CUSUM for downward shifts of size >= ``delta`` (same units as y).

    g_t = max(0, g_{t-1} + (ref - y_t - delta/2) / sigma); an alarm when g_t > h confirms a shift
    that began just after the last t where g was 0; the reference then moves to the mean of the
    points since that change point and g restarts. ``sigma`` defaults to :func:`noise_sigma`,
    floored at ``delta/2`` so a noiseless curve does not alarm on every tiny step.
    """
    yy = as_array(y)
    if yy.size == 0:
        return CusumChart((), (), 0.0, 0.0)
    sd = max(noise_sigma(yy) if sigma is None else sigma, delta / 2, 1e-12)
    ref, g, last_zero = float(yy[0]), 0.0, 0
    alarms: list[int] = []
    cps: list[int] = []
    for t in range(1, yy.size):
        g = max(0.0, g + (ref - yy[t] - delta / 2) / sd)
        if g == 0.0:
            last_zero = t
        elif g > h:
            cp = last_zero + 1 if last_zero < t else t
            alarms.append(t)
            cps.append(cp)
            ref, g, last_zero = float(np.mean(yy[cp : t + 1])), 0.0, t
    return CusumChart(tuple(alarms), tuple(cps), g / h, sd)


def cusum_detector(
    values: Sequence[float] | np.ndarray, *, patience: int, min_delta: float, h: float = 5.0,
    min_points: int = 4,
) -> DetectorResult:
    """Plateau by CUSUM: no confirmed improvement of >= ``min_delta`` (relative: the chart runs on
    log values when all are positive) for ``patience`` validations. The score is that count over
    the patience, discounted by how close the chart is to confirming a new improvement."""
    name = "cusum"
    idx, y = finite_points(as_array(values))
    if y.size < min_points:
        return abstain(name, Reason.INSUFFICIENT_DATA, f"{y.size} finite values, need {min_points}")
    logscale = bool(np.all(y > 0))
    z = np.log(y) if logscale else y / (abs(float(np.median(y))) or 1.0)
    chart = cusum_improvements(z, delta=-math.log1p(-min_delta) if logscale else min_delta, h=h)
    last = chart.alarms[-1] if chart.alarms else 0
    since = y.size - 1 - last
    score = min(1.0, since / patience) * (1.0 - min(1.0, chart.statistic))
    info: dict[str, Any] = dict(since_last_shift=since, patience=patience, chart=chart.statistic,
                noise_sigma=chart.sigma, shifts_at=[int(idx[c]) for c in chart.changepoints[-5:]])
    where = f"last confirmed drop began at validation {int(idx[chart.changepoints[-1]]) + 1}" if chart.changepoints else "no confirmed drop yet"
    if score >= 0.5:
        return result(name, score, Reason.PLATEAU,
                      f"no level drop >= {min_delta:.2%} confirmed for {since} validations ({where})", **info)
    return result(name, score, Reason.IMPROVING,
                  f"{since} validations since the last confirmed drop ({where}), patience {patience}", **info)


# --- training progress --------------------------------------------------------------------------
def training_progress_detector(
    train_loss: Sequence[float] | np.ndarray | None, *, window: int, horizon: float, floor: float,
    alpha: float = 0.05, min_points: int = 6, name: str = "training_progress", what: str = "train_loss",
    per: str = "validations",
) -> DetectorResult:
    """Is the *training* loss still falling by more than ``floor`` (relative) over ``horizon``
    validations? Prechelt's "training progress" (1998): while the model still learns the training
    set, a flat validation curve is not convergence yet; once both have stalled, nothing more is
    coming. Never votes (it is a gate for the controller).

    ``train_loss`` is the value current at each validation (train.py logs it every N steps, so
    neighbouring validations often repeat a value): repeats are collapsed before Mann-Kendall and
    Sen's slope (at its median, not the optimistic end: this is a gate, not a stop signal) on the
    last ``window`` validations. Score 1 = still progressing. The study level asks the same of the
    line's level per generation (``name`` ``line_progress``, ``what`` and ``per`` for the messages).
    """
    raw = as_array(train_loss)
    idx, y = finite_points(raw[-window:])
    if y.size:
        keep = np.r_[True, np.diff(y) != 0]  # one point per logged value
        idx, y = idx[keep], y[keep]
    if y.size < min_points:
        return abstain(name, Reason.INSUFFICIENT_DATA, f"{y.size} distinct {what} values, need {min_points}",
                       points=int(y.size))
    mk = mann_kendall(y, idx.astype(float), alpha=alpha)
    level = _sen_level(mk, idx, y)
    fall = -mk.slope * horizon / level
    progressing = mk.p_decreasing < alpha and fall >= floor
    info: dict[str, Any] = dict(fall=fall, horizon=horizon, floor=floor, p_decreasing=mk.p_decreasing, points=int(y.size))
    if progressing:
        return result(name, 1.0, Reason.IMPROVING,
                      f"{what} still falling: {fall:.1%} per {horizon:g} {per} at Sen's slope "
                      f"(MK p={mk.p_decreasing:.3g}) >= {floor:.1%}", voting=False, ends=False, **info)
    return result(name, 0.0, Reason.PLATEAU,
                  f"{what} stalled: {fall:.1%} per {horizon:g} {per} (MK p={mk.p_decreasing:.3g}), "
                  f"floor {floor:.1%}", voting=False, ends=False, **info)
