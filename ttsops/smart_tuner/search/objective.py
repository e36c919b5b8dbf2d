"""The tuner's objective: one number per validation, lower is better.

``objective(metrics)`` is ``val_loss`` plus non-negative penalties, each monotone in its metric::

    objective = val_loss
              + alignment * max(0, alignment_threshold - attention_alignment_score)
              + mcd       * mcd                        (dB, clipped at >= 0)
              + stoi      * (1 - stoi)                  (stoi clipped to [0, 1])
              + pesq      * (4.5 - pesq) / 3.5          (pesq clipped to [1, 4.5])
              + asr_wer   * asr_wer                     (clipped to [0, 1])
              + free_running * free_running_distance    (clipped to [0, 2])

| term | metric | direction | default weight | at typical values | missing or NaN |
|---|---|---|---|---|---|
| base | ``val_loss`` | lower better | 1 | 1 - 9 on the demo (below) | objective is ``inf`` (diverged / no validation) |
| alignment | ``attention_alignment_score`` | higher better, only below 0.8 counts | 1.0 | 0.5 -> +0.30, >= 0.8 -> 0 | worst case: +1.0 * threshold |
| mcd | ``mcd`` (dB) | lower better | 0.02 / dB | 8 dB -> +0.16 | worst case: +0.02 * 20 dB = +0.40 |
| stoi | ``stoi`` | higher better | 0.5 | 0.9 -> +0.05 | worst case: +0.5 |
| pesq | ``pesq`` | higher better | 0.1 | 3.0 -> +0.043 | worst case: +0.1 |
| asr_wer | ``asr_wer`` (in-domain held-out WER) | lower better | 2.0 | 0.94 -> +1.88, 0.35 -> +0.70 | worst case: +2.0 |
| free_running | ``free_running_distance`` | lower better | 0.0 (off) | smear ~0.9 -> +0.9w | worst case: +2.0 * w |

Measured ranges (the demo's model, 2026-12-03): ``val_loss`` 9 at the first validations, 2-3 after
300 steps, ~1.0 after 1,700; ``asr_wer`` 1.0 untrained, ~0.94 while the speech is still a smear,
0.7 for the first intelligible words; ``free_running_distance`` 0.8-1.0 for a smear. So at its
default weight the intelligibility term moves the objective as much as a halved ``val_loss`` does
once the model starts to speak, and ``asr_wer`` is what tells generations apart when their
teacher-forced losses look alike. train.py measures it on a schedule (``intelligibility_every``
and the last validation of a run): before the first measurement a generation pays the worst case,
which is the same constant for every generation at that point, so pruning comparisons at equal
validation counts do not change; the value a generation ends with includes its measured WER.

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
from typing import Any

MCD_WORST_DB = 20.0  # an MCD this high is noise; caps the penalty of a missing MCD
FREE_RUNNING_WORST = 2.0  # log-mel units; caps the free-running term (a smear scores ~0.9)


@dataclass(frozen=True)
class ObjectiveWeights:
    alignment: float = 1.0
    alignment_threshold: float = 0.8  # smart_early_stopping.attention_monitoring.alignment_threshold
    mcd: float = 0.02  # per dB
    stoi: float = 0.5
    pesq: float = 0.1
    asr_wer: float = 2.0
    free_running: float = 0.0

    def __post_init__(self) -> None:
        for name in ("alignment", "mcd", "stoi", "pesq", "asr_wer", "free_running"):
            w = getattr(self, name)
            if not (math.isfinite(w) and w >= 0):
                raise ValueError(f"ObjectiveWeights.{name} must be finite and >= 0, got {w!r}")
        if not 0.0 <= self.alignment_threshold <= 1.0:
            raise ValueError(f"alignment_threshold must be in [0, 1], got {self.alignment_threshold!r}")


DEFAULT_WEIGHTS = ObjectiveWeights()


def objective_weights(cfg: Any) -> ObjectiveWeights:
    """From a TunerConfig: its ``objective`` section and the attention monitor's alignment threshold."""
    w = cfg.objective
    return ObjectiveWeights(
        alignment=w.alignment, mcd=w.mcd, stoi=w.stoi, pesq=w.pesq, asr_wer=w.asr_wer, free_running=w.free_running,
        alignment_threshold=cfg.smart_early_stopping.attention_monitoring.alignment_threshold)


def _finite(metrics: Mapping[str, float], name: str) -> float | None:
    value = metrics.get(name)
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def objective_terms(
    metrics: Mapping[str, float], weights: ObjectiveWeights = DEFAULT_WEIGHTS
) -> dict[str, float]:
    """Each term of the objective (``val_loss``, ``alignment``, ``mcd``, ``stoi``, ``pesq``, ``asr_wer``,
    ``free_running``)."""
    val_loss = _finite(metrics, "val_loss")
    align = _finite(metrics, "attention_alignment_score")
    mcd = _finite(metrics, "mcd")
    stoi = _finite(metrics, "stoi")
    pesq = _finite(metrics, "pesq")
    align = 0.0 if align is None else min(1.0, max(0.0, align))
    mcd = MCD_WORST_DB if mcd is None else max(0.0, mcd)
    stoi = 0.0 if stoi is None else min(1.0, max(0.0, stoi))
    pesq = 1.0 if pesq is None else min(4.5, max(1.0, pesq))
    wer = _finite(metrics, "asr_wer")
    wer = 1.0 if wer is None else min(1.0, max(0.0, wer))
    free = _finite(metrics, "free_running_distance")
    free = FREE_RUNNING_WORST if free is None else min(FREE_RUNNING_WORST, max(0.0, free))
    return {
        "val_loss": math.inf if val_loss is None else val_loss,
        "alignment": weights.alignment * max(0.0, weights.alignment_threshold - align),
        "mcd": weights.mcd * mcd,
        "stoi": weights.stoi * (1.0 - stoi),
        "pesq": weights.pesq * (4.5 - pesq) / 3.5,
        "asr_wer": weights.asr_wer * wer,
        "free_running": weights.free_running * free,
    }


def objective(metrics: Mapping[str, float], weights: ObjectiveWeights = DEFAULT_WEIGHTS) -> float:
    """The composite objective of one validation (lower is better); see the module docstring."""
    return math.fsum(objective_terms(metrics, weights).values())
