import numpy as np
import pytest

from ttsops.metrics.attention import batch_alignment_metrics, score_alignment


def diagonal(t: int, n: int, spread: float = 0.0) -> np.ndarray:
    a = np.zeros((t, n))
    for i in range(t):
        c = i * (n - 1) / max(1, t - 1)
        lo = int(np.floor(c))
        a[i, lo] = 1 - spread
        a[i, min(n - 1, lo + 1)] += spread
    return a


@pytest.mark.parametrize(("t", "n"), [(40, 40), (30, 50), (90, 40)])
def test_clean_diagonal_scores_near_one(t, n) -> None:
    s = score_alignment(diagonal(t, n, spread=0.3))
    assert s.score > 0.9
    assert s.entropy < 0.3


@pytest.mark.parametrize(
    ("name", "matrix"),
    [
        ("uniform", np.ones((40, 40))),
        ("random", np.random.RandomState(0).rand(40, 40)),
        ("random sharp", np.random.RandomState(1).rand(40, 40) ** 16),
        ("backwards", diagonal(40, 40)[::-1]),
        ("stuck", np.tile(np.eye(40)[5], (40, 1))),
        ("parked at the end", np.tile(np.eye(40)[-1], (40, 1))),
    ],
)
def test_bad_alignments_score_low(name, matrix) -> None:
    assert score_alignment(matrix).score < 0.2, name


def test_jumping_alignment_scores_low() -> None:
    a = np.zeros((40, 40))
    order = np.random.RandomState(2).permutation(40)
    a[np.arange(40), order] = 1
    assert score_alignment(a).score < 0.2


def test_non_finite_scores_zero_and_bad_shape_raises() -> None:
    a = diagonal(10, 10)
    a[3, 3] = np.nan
    assert score_alignment(a).score == 0.0
    with pytest.raises(ValueError, match="shape"):
        score_alignment(np.zeros(5))


def test_batch_metrics_crop_padding() -> None:
    padded = np.zeros((2, 50, 60))
    padded[0, :40, :40] = diagonal(40, 40)
    padded[1, :30, :20] = diagonal(30, 20)
    score, ent = batch_alignment_metrics(padded, [40, 20], [40, 30])
    assert score > 0.9 and ent < 0.2
