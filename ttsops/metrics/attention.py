"""Attention-matrix health: ``attention_alignment_score`` (diagonality) and ``attention_entropy``.

An alignment A is (T decoder steps) x (N text tokens), each row a distribution over tokens.

``attention_alignment_score`` = focus x monotonicity x coverage, each in [0, 1]:

* focus: mean over steps of the attention mass within one token of the row's peak. Uniform or
  scattered attention gives ~3/N, a sharp peak gives ~1.
* monotonicity: share of consecutive steps whose peak moves forward by 0..max_jump tokens, with
  max_jump = max(2, 2*ceil(N/T)) (a step may advance several tokens when T < N). Backwards
  attention and jumps score low.
* coverage: (last peak - first peak) / (N - 1), clipped to [0, 1]: attention stuck on a few
  tokens, or that never reaches the end of the text, scores low.

A clean diagonal scores ~1, uniform or random attention ~0, and sharp-but-backwards, stuck or
jumping attention low, unlike Coqui's ``alignment_diagonal_score`` (mean row max), which measures
sharpness only. Matrices are cropped to the utterance's true lengths before scoring.

``attention_entropy``: mean row entropy divided by log(N): 0 = one token per step, 1 = uniform.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AlignmentScore:
    score: float
    focus: float
    monotonicity: float
    coverage: float
    entropy: float


def score_alignment(a: np.ndarray) -> AlignmentScore:
    """Score one (T, N) alignment (already cropped to the valid region)."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"alignment must be a non-empty (T, N) matrix, got shape {a.shape}")
    t, n = a.shape
    if not np.isfinite(a).all():
        return AlignmentScore(0.0, 0.0, 0.0, 0.0, 1.0)
    a = a / np.clip(a.sum(axis=1, keepdims=True), 1e-12, None)
    peaks = a.argmax(axis=1)
    idx = np.arange(n)[None]
    near = np.abs(idx - peaks[:, None]) <= 1
    focus = float((a * near).sum(axis=1).mean())
    if t > 1:
        max_jump = max(2, 2 * math.ceil(n / t))
        steps = np.diff(peaks)
        monotonicity = float(((steps >= 0) & (steps <= max_jump)).mean())
    else:
        monotonicity = 1.0
    coverage = float(np.clip((peaks[-1] - peaks[0]) / (n - 1), 0.0, 1.0)) if n > 1 else 1.0
    ent = -(a * np.log(np.clip(a, 1e-12, None))).sum(axis=1).mean()
    entropy = max(0.0, float(ent / math.log(n))) if n > 1 else 0.0
    return AlignmentScore(focus * monotonicity * coverage, focus, monotonicity, coverage, entropy)


def batch_alignment_metrics(alignments, text_lens, dec_lens) -> tuple[float, float]:
    """Mean (attention_alignment_score, attention_entropy) over a batch of padded alignments
    (B, T_max, N_max), each cropped to (dec_len, text_len)."""
    alignments = np.asarray(alignments)
    scores, ents = [], []
    for a, n, t in zip(alignments, np.asarray(text_lens), np.asarray(dec_lens), strict=True):
        s = score_alignment(a[: int(t), : int(n)])
        scores.append(s.score)
        ents.append(s.entropy)
    return float(np.mean(scores)), float(np.mean(ents))
