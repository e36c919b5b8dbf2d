"""Free-running fidelity: how far a model's own (not teacher-forced) mel is from the recording.

Teacher-forced losses and the attention score cannot see a decoder that leans on the previous frame:
with the true previous frame as input it predicts well, and its attention walks the text, while its
free-running output is a smear of the mean spectrum. ``free_running_distance`` compares the
free-running mel with the target after dynamic time warping (the two differ in length and pace), so
a smear scores high and a copy of the target scores 0. Cheap enough for every validation (a few clips,
~1 ms per 100x100 frames).

The distance is the mean absolute log-mel difference along the DTW path (natural-log units per mel
band). DTW is free to stretch, so the figure ignores pace: ``length_ratio`` reports that separately.
"""

from __future__ import annotations

import numpy as np


def dtw_path_cost(cost: np.ndarray) -> tuple[float, int]:
    """Minimal cumulative cost of a monotonic path through ``cost`` (T1, T2) with steps (1,0), (0,1),
    (1,1), from (0, 0) to the end; returns (total cost, path length). Anti-diagonals are computed as
    vectors, so the Python loop runs T1 + T2 times."""
    t1, t2 = cost.shape
    inf = np.inf
    acc = np.full((t1 + 1, t2 + 1), inf)
    steps = np.zeros((t1 + 1, t2 + 1))
    acc[0, 0] = 0.0
    for k in range(2, t1 + t2 + 1):  # cells (i, j), 1-based, with i + j == k
        i = np.arange(max(1, k - t2), min(t1, k - 1) + 1)
        j = k - i
        cand = np.stack([acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]])
        best = np.argmin(cand, axis=0)
        prev_steps = np.stack([steps[i - 1, j - 1], steps[i - 1, j], steps[i, j - 1]])
        acc[i, j] = cand[best, np.arange(len(i))] + cost[i - 1, j - 1]
        steps[i, j] = prev_steps[best, np.arange(len(i))] + 1
    return float(acc[t1, t2]), int(steps[t1, t2])


def free_running_distance(predicted: np.ndarray, target: np.ndarray) -> float:
    """Mean |log-mel difference| along the DTW path between ``predicted`` and ``target``, both
    (n_mels, T); NaN when either is empty."""
    if predicted.shape[1] == 0 or target.shape[1] == 0:
        return float("nan")
    p, t = np.asarray(predicted, np.float64), np.asarray(target, np.float64)
    cost = np.abs(p.T[:, None, :] - t.T[None, :, :]).mean(-1)
    total, n = dtw_path_cost(cost)
    return total / n
