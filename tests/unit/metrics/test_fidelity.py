import numpy as np
import pytest

from ttsops.metrics.fidelity import dtw_path_cost, free_running_distance


def brute_force_dtw(cost: np.ndarray) -> float:
    t1, t2 = cost.shape
    acc = np.full((t1, t2), np.inf)
    for i in range(t1):
        for j in range(t2):
            prev = 0.0 if i == j == 0 else min(
                acc[i - 1, j - 1] if i and j else np.inf, acc[i - 1, j] if i else np.inf,
                acc[i, j - 1] if j else np.inf)
            acc[i, j] = prev + cost[i, j]
    return float(acc[-1, -1])


@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (5, 1), (7, 7), (9, 4), (3, 11)])
def test_dtw_matches_the_textbook_recursion(shape) -> None:
    cost = np.random.default_rng(sum(shape)).random(shape)
    total, steps = dtw_path_cost(cost)
    assert total == pytest.approx(brute_force_dtw(cost))
    assert max(shape) <= steps <= sum(shape) - 1


def mel(t: int = 120, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(-5, 2, size=(80, t))


def test_a_copy_scores_zero_at_any_pace() -> None:
    target = mel()
    assert free_running_distance(target, target) == 0.0
    assert free_running_distance(np.repeat(target, 2, axis=1), target) == pytest.approx(0.0)


def test_the_mean_spectrum_smear_scores_far_worse_than_a_noisy_copy() -> None:
    target = mel()
    smear = np.tile(target.mean(1, keepdims=True), (1, 150))
    noisy = target + np.random.default_rng(1).normal(0, 0.3, target.shape)
    assert free_running_distance(noisy, target) < 0.5 * free_running_distance(smear, target)


def test_empty_is_nan() -> None:
    assert np.isnan(free_running_distance(np.zeros((80, 0)), mel()))
