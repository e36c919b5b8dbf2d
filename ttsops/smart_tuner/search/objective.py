"""The tuner's objective: one number per validation, lower is better.

``objective(metrics)`` is ``val_loss`` plus non-negative penalties, each monotone in its metric::

    objective = val_loss
              + alignment * max(0, alignment_threshold - attention_alignment_score)
              + mcd       * mcd                        (dB, clipped at >= 0)
              + stoi      * (1 - stoi)                  (stoi clipped to [0, 1])
              + pesq      * (4.5 - pesq) / 3.5          (pesq clipped to [1, 4.5])

| term | metric | direction | default weight | at typical values | missing or NaN |
|---|---|---|---|---|---|
| base | ``val_loss`` | lower better | 1 | 0.3 - 1.5 | objective is ``inf`` (diverged / no validation) |
| alignment | ``attention_alignment_score`` | higher better, only below 0.8 counts | 1.0 | 0.5 -> +0.30, >= 0.8 -> 0 | worst case: +1.0 * threshold |
| mcd | ``mcd`` (dB) | lower better | 0.02 / dB | 8 dB -> +0.16 | worst case: +0.02 * 20 dB = +0.40 |
| stoi | ``stoi`` | higher better | 0.5 | 0.9 -> +0.05 | worst case: +0.5 |
| pesq | ``pesq`` | higher better | 0.1 | 3.0 -> +0.043 | worst case: +0.1 |

Why these choices:

* ``val_loss`` (mel + gate) stays the dominant term: it is what the model optimises and the only
  metric that is always there. A generation with no finite ``val_loss`` is unusable: ``inf``.
* Attention only counts below ``alignment_threshold`` (0.8, SPEC's minimum diagonality): above it,
  a sharper alignment does not make speech better, below it the model babbles or skips.
* Audio metrics are small corrections (Piper's lesson: mel L1 saturates before audio is clean, so
  audio metrics break ties between losses that look alike). MCD implementations disagree on
  absolute values, so its weight is small.
* A missing or non-finite secondary metric gets its *worst-case* penalty: "not measured" never
  looks better than "measured and bad". For a trainer that never logs e.g. PESQ every generation
  pays the same constant, so rankings between its generations do not change.

The value is finite unless ``val_loss`` is missing/non-finite. Pure function, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

MCD_WORST_DB = 20.0  # an MCD this high is noise; caps the penalty of a missing MCD


@dataclass(frozen=True)
class ObjectiveWeights:
    alignment: float = 1.0
    alignment_threshold: float = 0.8  # smart_early_stopping.attention_monitoring.alignment_threshold
    mcd: float = 0.02  # per dB
    stoi: float = 0.5
    pesq: float = 0.1

    def __post_init__(self) -> None:
        for name in ("alignment", "mcd", "stoi", "pesq"):
            w = getattr(self, name)
            if not (math.isfinite(w) and w >= 0):
                raise ValueError(f"ObjectiveWeights.{name} must be finite and >= 0, got {w!r}")
        if not 0.0 <= self.alignment_threshold <= 1.0:
            raise ValueError(f"alignment_threshold must be in [0, 1], got {self.alignment_threshold!r}")


DEFAULT_WEIGHTS = ObjectiveWeights()


def _finite(metrics: Mapping[str, float], name: str) -> float | None:
    value = metrics.get(name)
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def objective_terms(
    metrics: Mapping[str, float], weights: ObjectiveWeights = DEFAULT_WEIGHTS
) -> dict[str, float]:
    """Each term of the objective (``val_loss``, ``alignment``, ``mcd``, ``stoi``, ``pesq``)."""
    val_loss = _finite(metrics, "val_loss")
    align = _finite(metrics, "attention_alignment_score")
    mcd = _finite(metrics, "mcd")
    stoi = _finite(metrics, "stoi")
    pesq = _finite(metrics, "pesq")
    align = 0.0 if align is None else min(1.0, max(0.0, align))
    mcd = MCD_WORST_DB if mcd is None else max(0.0, mcd)
    stoi = 0.0 if stoi is None else min(1.0, max(0.0, stoi))
    pesq = 1.0 if pesq is None else min(4.5, max(1.0, pesq))
    return {
        "val_loss": math.inf if val_loss is None else val_loss,
        "alignment": weights.alignment * max(0.0, weights.alignment_threshold - align),
        "mcd": weights.mcd * mcd,
        "stoi": weights.stoi * (1.0 - stoi),
        "pesq": weights.pesq * (4.5 - pesq) / 3.5,
    }


def objective(metrics: Mapping[str, float], weights: ObjectiveWeights = DEFAULT_WEIGHTS) -> float:
    """The composite objective of one validation (lower is better); see the module docstring."""
    return math.fsum(objective_terms(metrics, weights).values())
