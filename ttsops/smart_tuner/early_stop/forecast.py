"""Gaussian-process forecast of a learning curve (the ensemble's "bayesian_prediction").

Scale: learning curves are roughly power laws early and flatten later, so we model
``log(loss)`` against ``log(validation)`` (both when the values are positive; otherwise the raw
values, scaled, against the validation index). The kernel is a Bayesian linear trend
(``DotProduct``, origin at the latest point) plus a smooth deviation (``Matern 5/2``) plus
observation noise (``WhiteKernel``); targets are centred on the latest level. Far ahead the smooth
part fades to "stays where it is" and the trend remains, and on a log-x axis a horizon of H
validations is a short step once training is long, which keeps extrapolation modest. (We also tried
RBF instead of Matern, centring on the window mean (forecasts a rise on falling curves) and the
freeze-thaw exponential-decay kernel; this one forecast best on synthetic exponential and power-law
curves: Brier 0.11 on "improves by > 0.5% within 15 validations".)

The forecast gives the latent (noise-free) mean and std ``horizon`` validations ahead, and
``P(improve) = P(f(T + H) < best * (1 - min_delta))`` where ``best`` is the lowest posterior mean
at the observed points (a denoised best: the raw minimum of a noisy curve is biased low).

Cost: only the last ``window`` finite points are used (default 30) and the optimiser runs once
from the previous fit's hyperparameters when the caller passes them back (``theta``), so a fit takes
milliseconds. scikit-learn is imported lazily (``load_backend()`` imports it ahead of time: the
EarlyStopController does so when it is built, so no decision pays the ~1 s import). Non-finite
points are dropped.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ttsops.smart_tuner.early_stop.detectors import (
    DetectorResult,
    Reason,
    abstain,
    as_array,
    finite_points,
    result,
)


@dataclass(frozen=True)
class Forecast:
    horizon: float  # validations ahead
    mean: float  # forecast of the curve, original scale
    std: float  # latent std on the model scale (log units when transform == "loglog")
    lower: float  # 95% band, original scale
    upper: float
    best: float  # lowest posterior mean at the observed points, original scale
    p_improve: float  # P(forecast < best * (1 - min_delta))
    transform: str
    theta: tuple[float, ...]  # fitted kernel hyperparameters (log scale), to warm-start the next fit


def load_backend() -> None:
    """Import scikit-learn's GP now (about a second, once per process) rather than in a decision."""
    import sklearn.gaussian_process  # noqa: F401


def _kernel(theta: Sequence[float] | None):  # type: ignore[no-untyped-def]
    from sklearn.gaussian_process.kernels import ConstantKernel, DotProduct, Matern, WhiteKernel

    k = (
        DotProduct(sigma_0=1.0, sigma_0_bounds=(1e-3, 1e2))
        + ConstantKernel(0.1, (1e-4, 1e1)) * Matern(length_scale=1.0, length_scale_bounds=(0.05, 10.0), nu=2.5)
        + WhiteKernel(noise_level=0.1, noise_level_bounds=(1e-6, 1.0))
    )
    if theta is not None and len(theta) == len(k.theta):
        k.theta = np.clip(np.asarray(theta, dtype=float), k.bounds[:, 0], k.bounds[:, 1])
    return k


def gp_forecast(
    values: Sequence[float] | np.ndarray, *, horizon: float, min_delta: float, window: int = 30,
    theta: Sequence[float] | None = None, min_points: int = 5, optimize: bool = True,
    inflation: float = 1.0,
) -> Forecast | None:
    """Fit and forecast ``horizon`` validations past the last one; None with < ``min_points``.

    ``optimize=False`` with a ``theta`` reuses those hyperparameters as they are (a Cholesky solve,
    about a millisecond) instead of maximising the marginal likelihood again. ``inflation``
    multiplies the latent std: a learning curve is not exactly this GP, and uninflated 95% bands
    covered the true future only ~80% of the time on synthetic exponential/power-law curves."""
    idx, y = finite_points(as_array(values))
    idx, y = idx[-window:], y[-window:]
    if y.size < min_points:
        return None
    loglog = bool(np.all(y > 0))
    t = idx.astype(float) + 1.0
    if loglog:
        x, z = np.log(t), np.log(y)
        x_new = math.log(t[-1] + horizon)
    else:
        x, z, x_new = t / t[-1], y, (t[-1] + horizon) / t[-1]
    x0 = x[-1]
    # centred on the latest level: far from the data the smooth part fades to "stays where it is"
    # (not to the window mean, which on a falling curve would forecast a rise)
    mu, sd = float(np.mean(z[-3:])), float(z.std()) or 1.0
    zs = (z - mu) / sd
    gp = _fit_gp((x - x0).reshape(-1, 1), zs, theta, fixed=not optimize and theta is not None)
    fitted_mean = gp.predict((x - x0).reshape(-1, 1))
    m_new, s_new = gp.predict(np.array([[x_new - x0]]), return_std=True)
    noise = float(gp.kernel_.k2.noise_level)
    latent_sd = math.sqrt(max(float(s_new[0]) ** 2 - noise, 1e-12)) * sd * inflation
    mean_z = float(m_new[0]) * sd + mu
    best_z = float(np.min(fitted_mean)) * sd + mu
    back: Callable[[float], float]
    if loglog:
        target = best_z + math.log1p(-min_delta)
        back = math.exp
    else:
        target = best_z - min_delta * (abs(best_z) or 1.0)
        back = float

    p = _normal_cdf((target - mean_z) / latent_sd)
    return Forecast(
        horizon=float(horizon), mean=back(mean_z), std=latent_sd,
        lower=back(mean_z - 1.96 * latent_sd), upper=back(mean_z + 1.96 * latent_sd),
        best=back(best_z), p_improve=p, transform="loglog" if loglog else "linear",
        theta=tuple(float(v) for v in gp.kernel_.theta),
    )


def _fit_gp(x: np.ndarray, z: np.ndarray, theta: Sequence[float] | None, fixed: bool) -> Any:
    """A GP fitted to (x, z): from ``theta`` as it is when ``fixed``, else maximising the likelihood."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process import GaussianProcessRegressor

    gp = GaussianProcessRegressor(kernel=_kernel(theta), normalize_y=False, n_restarts_optimizer=0,
                                  optimizer=None if fixed else _lbfgs, random_state=0)
    with warnings.catch_warnings():
        # hyperparameters at a bound are expected on short, clean curves: not an error here
        warnings.simplefilter("ignore", ConvergenceWarning)
        gp.fit(x, z)
    return gp


def _lbfgs(obj_func, initial_theta, bounds):  # type: ignore[no-untyped-def]
    """sklearn's default optimiser with an iteration cap, so one fit stays well under a second."""
    from scipy.optimize import minimize

    res = minimize(obj_func, initial_theta, method="L-BFGS-B", jac=True, bounds=bounds,
                   options={"maxiter": MAX_ITER})
    return res.x, res.fun


MAX_ITER = 60


def _normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2))


def forecast_detector(
    values: Sequence[float] | np.ndarray, *, horizon: float, min_delta: float, window: int = 30,
    theta: Sequence[float] | None = None, min_points: int = 6, optimize: bool = True,
    inflation: float = 1.0,
) -> DetectorResult:
    """Score ``1 - P(improve by > min_delta within horizon)``: stop when improvement is unlikely."""
    name = "gp_forecast"
    fc = gp_forecast(values, horizon=horizon, min_delta=min_delta, window=window, theta=theta,
                     min_points=min_points, optimize=optimize, inflation=inflation)
    if fc is None:
        return abstain(name, Reason.INSUFFICIENT_DATA, f"need {min_points} finite values to forecast")
    info: dict[str, Any] = dict(horizon=fc.horizon, mean=fc.mean, lower=fc.lower, upper=fc.upper, best=fc.best,
                p_improve=fc.p_improve, transform=fc.transform, theta=list(fc.theta))
    text = (f"forecast {fc.mean:.5g} [{fc.lower:.5g}, {fc.upper:.5g}] in {horizon:g} validations vs "
            f"best {fc.best:.5g}: P(improve > {min_delta:.2%}) = {fc.p_improve:.2f}")
    reason = Reason.FORECAST_NO_IMPROVEMENT if fc.p_improve <= 0.5 else Reason.FORECAST_IMPROVEMENT
    return result(name, 1.0 - fc.p_improve, reason, text, **info)
