"""The tuner's objective: one number per validation, lower is better.

``objective(metrics)`` is the scaled ``val_loss`` plus non-negative penalties, each monotone in its
metric::

    objective = val_loss / val_loss_scale
              + alignment * max(0, alignment_threshold - attention_alignment_score)
              + mcd       * mcd                        (dB, clipped to [0, 30])
              + stoi      * (1 - stoi)                  (stoi clipped to [0, 1])
              + pesq      * (4.5 - pesq) / 3.5          (pesq clipped to [1, 4.5])
              + asr_wer   * asr_wer                     (clipped to [0, 1])
              + free_running * free_running_distance    (clipped to [0, 2])

``val_loss_scale`` (``objective.val_loss_scale``, 5.0) brings the loss to about 1 for a trained
model, so that the weights below mean what the table says whatever the loss's own scale: our
Tacotron2's teacher-forced ``val_loss`` (mel L1+L2 + gate BCE, summed over the postnet and the
decoder output) is not the 0.3-1.5 this module once assumed. Measured on the 57 recorded train.py
runs of the early-stop harness (``benchmarks/curves/recorded``, 5,970 validations; demo-size and
tiny models, 2026-11/12):

| metric | all validations p5 / p50 / p95 | each run's last validation p5 / p50 / p95 | each run's best p5 / p50 / p95 |
|---|---|---|---|
| ``val_loss`` | 3.3 / 6.3 / 18.4 | 3.5 / 4.9 / 11.7 | 3.1 / 4.7 / 7.4 |
| ``attention_alignment_score`` | 0.13 / 0.81 / 0.91 | 0.00 / 0.85 / 0.92 | |
| ``mcd`` (dB) | 12.5 / 16.7 / 22.5 | 12.4 / 15.3 / 22.3 | 11.8 / 14.9 / 19.4 |
| ``stoi`` | 0.26 / 0.43 / 0.59 | 0.27 / 0.50 / 0.60 | |
| ``pesq`` | 1.03 / 1.06 / 1.43 | 1.03 / 1.05 / 1.11 | |

(``asr_wer`` and ``free_running_distance`` are not in those curves; the demo's model measured
``asr_wer`` 1.0 untrained, ~0.94 while the speech is still a smear, 0.7 for the first intelligible
words, and ``free_running_distance`` 0.8-1.0 for a smear, 2026-12-03.)

So the scaled loss of a run's best checkpoint sits at 0.6-1.5 (median 0.95), and:

| term | metric | direction | default weight | at measured values | missing or NaN |
|---|---|---|---|---|---|
| base | ``val_loss`` | lower better | 1 / ``val_loss_scale`` (5) | best 3.1-7.4 -> 0.62-1.48 | objective is ``inf`` (diverged / no validation) |
| alignment | ``attention_alignment_score`` | higher better, only below the threshold (0.8) counts | 1.0 | 0.5 -> +0.30 (like a 30% lower loss), >= 0.8 -> 0 | worst case: +1.0 * threshold |
| mcd | ``mcd`` (dB) | lower better | 0.02 / dB | 12-22 dB -> +0.24-0.45 | worst case: +0.02 * 30 dB = +0.60 |
| stoi | ``stoi`` | higher better | 0.5 | 0.27-0.60 -> +0.37-0.20 | worst case: +0.5 |
| pesq | ``pesq`` | higher better | 0.1 | 1.03-1.11 -> +0.099-0.097 | worst case: +0.1 |
| asr_wer | ``asr_wer`` (in-domain held-out WER) | lower better | 1.0 | 0.94 -> +0.94, 0.7 -> +0.70 | worst case: +1.0 |
| free_running | ``free_running_distance`` | lower better | 0.0 (off) | smear ~0.9 -> +0.9w | worst case: +2.0 * w |

Across the recorded runs' last validations the scaled loss spreads over ~1.6 (0.7-2.3), the audio
terms over ~0.35 (MCD 0.2, STOI 0.17, PESQ 0.002): they correct, the loss leads. At its default
weight the intelligibility term moves the objective as much as a halved ``val_loss`` does once the
model starts to speak (2.5 -> 1.25 is -0.25; WER 0.94 -> 0.7 is -0.24), and ``asr_wer`` is what
tells generations apart when their teacher-forced losses look alike. train.py measures it on a
schedule (``intelligibility_every`` and the last validation of a run): before the first
measurement a generation pays the worst case, which is the same constant for every generation at
that point, so pruning comparisons at equal validation counts do not change; the value a
generation ends with includes its measured WER. For another trainer, set ``val_loss_scale`` to
the loss its trained runs reach (the terms then weigh as above); measure with
``ttsops bench early-stop``'s curve files or your MLflow runs.

Why these choices:

* ``val_loss`` (mel + gate) stays the dominant term: it is what the model optimises and the only
  metric that is always there. A generation with no finite ``val_loss`` is unusable: ``inf``.
  Scaling it does not change which of two generations with equal penalties is better; it sets how
  much the penalties count against it.
* Attention only counts below ``alignment_threshold`` (0.8, SPEC's minimum diagonality): above it,
  a sharper alignment does not make speech better, below it the model babbles or skips.
* Audio metrics are small corrections (Piper's lesson: mel L1 saturates before audio is clean, so
  audio metrics break ties between losses that look alike). MCD implementations disagree on
  absolute values, so its weight is small.
* A missing or non-finite secondary metric gets its *worst-case* penalty: "not measured" never
  looks better than "measured and bad" (MCD is capped at 30 dB: the recorded runs reach 22 dB).
  For a trainer that never logs e.g. PESQ every generation pays the same constant, so rankings
  between its generations do not change.

The value is finite unless ``val_loss`` is missing/non-finite. Pure function, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MCD_WORST_DB = 30.0  # an MCD this high is noise (recorded runs: 12-22 dB); caps the MCD term and a missing MCD's
FREE_RUNNING_WORST = 2.0  # log-mel units; caps the free-running term (a smear scores ~0.9)


@dataclass(frozen=True)
class ObjectiveWeights:
    val_loss_scale: float = 5.0  # val_loss is divided by this (measured: see the module docstring)
    alignment: float = 1.0
    alignment_threshold: float = 0.8  # smart_early_stopping.attention_monitoring.alignment_threshold
    mcd: float = 0.02  # per dB
    stoi: float = 0.5
    pesq: float = 0.1
    asr_wer: float = 1.0
    free_running: float = 0.0

    def __post_init__(self) -> None:
        for name in ("alignment", "mcd", "stoi", "pesq", "asr_wer", "free_running"):
            w = getattr(self, name)
            if not (math.isfinite(w) and w >= 0):
                raise ValueError(f"ObjectiveWeights.{name} must be finite and >= 0, got {w!r}")
        if not (math.isfinite(self.val_loss_scale) and self.val_loss_scale > 0):
            raise ValueError(f"ObjectiveWeights.val_loss_scale must be finite and > 0, got {self.val_loss_scale!r}")
        if not 0.0 <= self.alignment_threshold <= 1.0:
            raise ValueError(f"alignment_threshold must be in [0, 1], got {self.alignment_threshold!r}")


DEFAULT_WEIGHTS = ObjectiveWeights()


def objective_weights(cfg: Any) -> ObjectiveWeights:
    """From a TunerConfig: its ``objective`` section and the attention monitor's alignment threshold."""
    w = cfg.objective
    return ObjectiveWeights(
        val_loss_scale=w.val_loss_scale, alignment=w.alignment, mcd=w.mcd, stoi=w.stoi, pesq=w.pesq, asr_wer=w.asr_wer, free_running=w.free_running,
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
    mcd = MCD_WORST_DB if mcd is None else min(MCD_WORST_DB, max(0.0, mcd))
    stoi = 0.0 if stoi is None else min(1.0, max(0.0, stoi))
    pesq = 1.0 if pesq is None else min(4.5, max(1.0, pesq))
    wer = _finite(metrics, "asr_wer")
    wer = 1.0 if wer is None else min(1.0, max(0.0, wer))
    free = _finite(metrics, "free_running_distance")
    free = FREE_RUNNING_WORST if free is None else min(FREE_RUNNING_WORST, max(0.0, free))
    return {
        "val_loss": math.inf if val_loss is None else val_loss / weights.val_loss_scale,
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
