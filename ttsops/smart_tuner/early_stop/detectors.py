"""Early-stopping detectors: the shared result type, small helpers and the patience family.

Every detector is a pure function over metric histories (one value per validation, oldest first;
numpy in, no I/O, no clock) that returns a frozen :class:`DetectorResult`:

- ``action``: :class:`Action` ``continue`` / ``stop`` (the run has converged, plateaued or started
  to overfit: keep its best checkpoint) / ``prune`` (the run is failing: diverged, never aligned,
  alignment collapsed);
- ``score`` in [0, 1]: evidence for ending the run now (0 = keep going, 1 = end it). A detector
  says ``stop`` when its score reaches 0.5;
- ``reason`` (:class:`Reason`), a one-line human ``message`` and JSON-able ``details``;
- ``voting``: False when the detector abstains (too little data, metric not logged, attention
  healthy) so the weighted vote ignores it, but its explanation is still kept.

The detectors live in four modules: this one (types, smoothing, patience, divergence, the
learning-rate schedule),
``detectors_stats`` (Mann-Kendall with Sen's slope, CUSUM), ``detectors_gp`` (Gaussian-process
forecast) and ``detectors_attention`` (alignment health).

NaN/inf policy (one per detector, each tested):

- :func:`patience_detector` (the Lightning-style baseline): a non-finite latest value stops the
  run with ``NON_FINITE_METRIC`` semantics, like Lightning's ``check_finite=True``.
- :func:`divergence_detector`: a non-finite latest loss prunes (train.py drops non-finite values, so
  a validation without its loss reads as NaN here); an infinite latest ``grad_norm`` prunes, a NaN
  one is taken as "not logged at this validation" (training metrics come at other steps).
- All other detectors drop non-finite points and judge the finite ones; a run whose latest loss is
  non-finite is pruned by the divergence detector before their verdicts matter.

Statistical caveat: the controller asks these questions after every validation. Repeating a 5% test
50 times fires by chance far more often than 5%, so no single test ends a run: they need practical
significance (a *relative* ``min_delta``), a warm-up, patience counted in validations, and the
weighted vote of several detectors.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any

import numpy as np

from ttsops.config import AdaptivePatienceConfig


class Action(StrEnum):
    CONTINUE = "continue"
    STOP = "stop"  # converged / plateau / overfitting: keep the best checkpoint
    PRUNE = "prune"  # failing run: diverged, never aligned, alignment collapsed


class Reason(StrEnum):
    INSUFFICIENT_DATA = "insufficient_data"
    MISSING_METRIC = "missing_metric"
    WARMUP = "warmup"
    IMPROVING = "improving"
    PLATEAU = "plateau"
    NO_IMPROVEMENT = "no_improvement"
    OVERFITTING = "overfitting"
    DIVERGENCE = "divergence"
    NON_FINITE = "non_finite"
    FORECAST_IMPROVEMENT = "forecast_improvement"
    FORECAST_NO_IMPROVEMENT = "forecast_no_improvement"
    NOT_YET_ALIGNED = "not_yet_aligned"
    ALIGNED = "aligned"
    NEVER_ALIGNED = "never_aligned"
    ALIGNMENT_COLLAPSED = "alignment_collapsed"
    ALIGNMENT_SETTLING = "alignment_settling"
    WAITING_FOR_ALIGNMENT = "waiting_for_alignment"
    TRAINING_PROGRESS = "training_progress"
    LR_ANNEALING = "lr_annealing"
    VOTE_STOP = "vote_stop"
    VOTE_CONTINUE = "vote_continue"
    STUDY_NO_IMPROVEMENT = "study_no_improvement"


#: reasons that end a run because it is failing, whatever the alignment (vetoes in the vote)
FAILURE_REASONS = frozenset(
    {Reason.DIVERGENCE, Reason.NON_FINITE, Reason.NEVER_ALIGNED, Reason.ALIGNMENT_COLLAPSED}
)


@dataclass(frozen=True)
class DetectorResult:
    name: str
    action: Action
    score: float
    reason: Reason
    message: str
    voting: bool = True
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ends_run(self) -> bool:
        return self.action is not Action.CONTINUE

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "action": self.action.value,
            "score": jsonable(self.score),
            "reason": self.reason.value,
            "message": self.message,
            "voting": self.voting,
            "details": jsonable(dict(self.details)),
        }


def jsonable(value: Any) -> Any:
    """Plain JSON types: numpy scalars/arrays unwrapped, enums by value, NaN/inf -> None."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value


def result(
    name: str, score: float, reason: Reason, message: str, *, voting: bool = True,
    prune: bool = False, ends: bool | None = None, **details: Any,
) -> DetectorResult:
    """Build a result; the action follows from the score (>= 0.5 ends the run) unless ``ends``
    says otherwise (patience detectors end exactly when patience runs out)."""
    score = float(min(1.0, max(0.0, score)))
    if (score >= 0.5) if ends is None else ends:
        action = Action.PRUNE if prune else Action.STOP
    else:
        action = Action.CONTINUE
    return DetectorResult(name, action, score, reason, message, voting, details)


def abstain(name: str, reason: Reason, message: str, **details: Any) -> DetectorResult:
    return DetectorResult(name, Action.CONTINUE, 0.0, reason, message, False, details)


# --- helpers ------------------------------------------------------------------------------------
History = Mapping[str, Sequence[float] | np.ndarray] | Sequence[Mapping[str, float]]


def columns(history: History) -> dict[str, np.ndarray]:
    """Metric name -> values per validation, from columns or from a list of per-validation rows
    (a row missing a metric gives NaN there)."""
    if isinstance(history, Mapping):
        return {str(k): as_array(v) for k, v in history.items()}
    rows = list(history)
    keys = sorted({k for row in rows for k in row})
    return {k: as_array(np.array([row.get(k, math.nan) for row in rows], dtype=float)) for k in keys}


def as_array(values: Sequence[float] | np.ndarray | None) -> np.ndarray:
    """1-D float64 copy; None (a metric that was never logged) becomes an empty array."""
    if values is None:
        return np.empty(0)
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    return arr.copy()


def finite_points(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(indices, values) of the finite entries: what the NaN-dropping detectors judge."""
    mask = np.isfinite(values)
    return np.flatnonzero(mask), values[mask]


def smooth(values: np.ndarray, alpha: float) -> np.ndarray:
    """Causal smoother: median of the last 3 finite points (kills single spikes), then an EMA.

    Causal so a value at validation t never uses later validations (what the replay harness and a
    live run both see). Non-finite points are skipped: the previous smoothed value carries on.
    """
    out = np.full(values.shape, np.nan)
    recent: list[float] = []
    level = math.nan
    for i, v in enumerate(values):
        if math.isfinite(v):
            recent = (recent + [float(v)])[-3:]
            med = float(np.median(recent))
            level = med if math.isnan(level) else alpha * med + (1 - alpha) * level
        out[i] = level
    return out


def min_delta_abs(best: float, min_delta: float) -> float:
    """``min_delta`` is relative: an improvement must beat ``min_delta * |best|``."""
    return min_delta * abs(best) if best != 0 else min_delta


def since_improvement(values: np.ndarray, min_delta: float) -> tuple[int, float, int]:
    """(validations since the last relative improvement, best value, index of best) of the finite
    points; lower is better. The first finite point counts as an improvement."""
    best, best_i, wait = math.inf, -1, 0
    for i, v in enumerate(values):
        if not math.isfinite(v):
            wait += 1
            continue
        if best_i < 0 or v < best - min_delta_abs(best, min_delta):
            best, best_i, wait = float(v), i, 0
        else:
            wait += 1
    return wait, best, best_i


def stage_of(epoch: float, cfg: AdaptivePatienceConfig) -> str:
    """Curriculum stage of an epoch: stages follow each other in warmup, main, fine_tune order;
    past the last one the last stage holds."""
    start = 0.0
    last = "main"
    for name in ("warmup", "main", "fine_tune"):
        st = cfg.stages.get(name)
        if st is None:
            continue
        last = name
        if epoch < start + st.epochs:
            return name
        start += st.epochs
    return last


def adaptive_patience(epoch: float, cfg: AdaptivePatienceConfig) -> tuple[str, int]:
    """(stage, patience in validations) at ``epoch``.

    ``initial_patience`` is the base (the ``main`` stage, multiplier 1.0); the stage multiplier
    scales it (warm-up 1.5: attention and loss are still moving fast and noisily; fine_tune 0.7:
    late gains are small) and ``max_patience`` caps it; the floor is 1 validation, so fine_tune's
    0.7 can actually shorten patience. With adaptation disabled: ``initial_patience`` throughout.
    """
    if not cfg.enabled:
        return "main", cfg.initial_patience
    stage = stage_of(epoch, cfg)
    st = cfg.stages.get(stage)  # type: ignore[call-overload]
    mult = st.multiplier if st is not None else 1.0
    return stage, int(min(cfg.max_patience, max(1, round(cfg.initial_patience * mult))))


# --- the patience family and divergence ---------------------------------------------------------
def patience_detector(
    values: Sequence[float] | np.ndarray, patience: int, min_delta: float, *, name: str = "patience"
) -> DetectorResult:
    """Classic early stopping (Lightning's ``EarlyStopping(mode="min")``) on the raw values: stop
    when the best has not improved by the relative ``min_delta`` for ``patience`` validations.
    A non-finite latest value stops at once (Lightning's ``check_finite``)."""
    y = as_array(values)
    if y.size == 0:
        return abstain(name, Reason.MISSING_METRIC, "no values yet")
    if not math.isfinite(y[-1]):
        return DetectorResult(
            name, Action.STOP, 1.0, Reason.NON_FINITE, f"latest value is {y[-1]}: not finite",
            details={"value": None},
        )
    wait, best, best_i = since_improvement(y, min_delta)
    msg = (
        f"no improvement > {min_delta:.2%} in the last {wait} validations "
        f"(patience {patience}); best {best:.5g} at validation {best_i + 1}"
    )
    reason = Reason.NO_IMPROVEMENT if wait >= patience else Reason.IMPROVING
    return result(name, wait / patience, reason, msg, ends=wait >= patience,
                  wait=wait, patience=patience, best=best, best_index=best_i)


def adaptive_patience_detector(
    values: Sequence[float] | np.ndarray, epochs: Sequence[float] | np.ndarray | None,
    cfg: AdaptivePatienceConfig, min_delta: float, *, alpha: float = 0.3,
) -> DetectorResult:
    """Curriculum patience on the smoothed curve: patience by the stage of the latest epoch
    (:func:`adaptive_patience`). Smoothing makes a single lucky validation not reset patience."""
    name = "adaptive_patience"
    y = as_array(values)
    if not np.isfinite(y).any():
        return abstain(name, Reason.MISSING_METRIC, "no finite values yet")
    ep = as_array(epochs)
    epoch = float(ep[-1]) if ep.size else float(y.size)
    stage, patience = adaptive_patience(epoch, cfg)
    s = smooth(y, alpha)
    wait, best, best_i = since_improvement(s, min_delta)
    msg = (
        f"{stage} stage (epoch {epoch:g}): smoothed curve has not improved > {min_delta:.2%} "
        f"for {wait} validations (patience {patience})"
    )
    reason = Reason.NO_IMPROVEMENT if wait >= patience else Reason.IMPROVING
    return result(name, wait / patience, reason, msg, ends=wait >= patience, stage=stage,
                  patience=patience, wait=wait, best_smoothed=best, best_index=best_i)


def divergence_detector(
    values: Sequence[float] | np.ndarray, *, factor: float = 2.0, consecutive: int = 3,
    grad_norm: Sequence[float] | np.ndarray | None = None,
) -> DetectorResult:
    """Training blew up: the latest loss is non-finite (or grad norm infinite), or the last ``consecutive``
    validations are all above ``factor`` x the best loss so far (overfitting rises by percents, not
    by a factor). Defaults 2x for 3 validations: our real tiny-model runs show 2x loss spikes lasting
    two validations that recover, which 1.5x for 2 validations called a divergence. Prunes."""
    name = "divergence"
    y = as_array(values)
    g = as_array(grad_norm)
    if y.size and not math.isfinite(y[-1]):
        return result(name, 1.0, Reason.NON_FINITE, f"latest loss is {y[-1]}: training diverged",
                      prune=True, value=None)
    if g.size and math.isinf(g[-1]):  # NaN here means "not logged at this validation"
        return result(name, 1.0, Reason.NON_FINITE, f"latest grad_norm is {g[-1]}: diverged",
                      prune=True, grad_norm=None)
    idx, fy = finite_points(y)
    if fy.size < consecutive + 1:
        return abstain(name, Reason.INSUFFICIENT_DATA, f"{fy.size} finite values, need {consecutive + 1}")
    best = float(np.min(fy[:-consecutive]))
    ratio = fy[-consecutive:] / best if best > 0 else np.full(consecutive, 1.0)
    worst = float(np.min(ratio))
    if best > 0 and worst > factor:
        return result(name, 1.0, Reason.DIVERGENCE,
                      f"last {consecutive} validations at >= {worst:.2f}x the best loss {best:.5g}: diverging",
                      prune=True, best=best, ratio=worst)
    return result(name, 0.0, Reason.IMPROVING, f"loss within {worst:.2f}x of its best ({best:.5g})",
                  voting=False, best=best, ratio=worst)


def lr_annealing_detector(
    learning_rate: Sequence[float] | np.ndarray | None, *, window: int, drop: float, min_fraction: float,
) -> DetectorResult:
    """Is the learning-rate schedule still annealing? True when the rate fell by at least ``drop``
    (relative) over the last ``window`` validations and is still above ``min_fraction`` of its peak.

    A plateau reached at a rate that is still being lowered is not the model's floor: the noise of
    SGD/Adam steps shrinks with the rate, and the loss usually steps down after each decay (the
    reason ``ReduceLROnPlateau`` has a ``cooldown``). After a one-off step decay the gate holds until
    the step leaves the window (``window - 1`` validations: a cooldown); under a continuous decay it
    holds until the rate is spent (below ``min_fraction`` of its peak, where further decay changes
    nothing). Never votes (it is a gate for the controller); score 1 = still annealing. NaN means
    "not logged at this validation".
    """
    name = "lr_annealing"
    lr = as_array(learning_rate)
    idx, fin = finite_points(lr)
    if fin.size < 2:
        return abstain(name, Reason.MISSING_METRIC if not fin.size else Reason.INSUFFICIENT_DATA,
                       f"{fin.size} learning_rate value(s) logged")
    # from the highest rate within the window, including the one current when it began (NaN = not
    # logged, carried over): a warm-up inside the window or a gap before it does not hide a decay
    began = max(int(np.searchsorted(idx, lr.size - window, side="right")) - 1, 0)
    peak, now, start = float(np.max(fin)), float(fin[-1]), float(np.max(fin[began:]))
    fell = max(0.0, 1.0 - now / start) if start > 0 else 0.0
    info: dict[str, Any] = dict(learning_rate=now, fell=fell, window=window, fraction_of_peak=now / peak if peak > 0 else None)
    if fell >= drop and now > min_fraction * peak:
        return result(name, 1.0, Reason.LR_ANNEALING,
                      f"learning rate still annealing: {now:.3g}, down {fell:.0%} over the last {window} "
                      f"validations ({now / peak:.1%} of its peak)", voting=False, ends=False, **info)
    why = "spent" if now <= min_fraction * peak else "steady"
    return result(name, 0.0, Reason.PLATEAU, f"learning rate {why}: {now:.3g}, down {fell:.0%} over the last "
                  f"{window} validations", voting=False, ends=False, **info)
