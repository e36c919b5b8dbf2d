import math

import numpy as np
from scipy.fft import dct

from ttsops.metrics.audio_quality import MCD_K, mcd, pesq_wb, stoi


def test_mcd_matches_a_hand_computed_case() -> None:
    ref = np.zeros((80, 4))
    test = np.zeros((80, 4))
    test[:, 0] = 0.5  # one frame raised by 0.5 in log-magnitude on every band
    # a flat offset only moves c0 (energy), which MCD excludes -> 0
    assert mcd(ref, test) == 0.0
    test = np.zeros((80, 4))
    test[0, :] = 1.0  # a single band raised by 1.0 (log-magnitude) -> log-power +2
    # c_k = (2/M) sum_m L_m cos(pi k (m + 1/2) / M) with L = 2 on band 0 only
    c = np.array([(2 / 80) * 2.0 * math.cos(math.pi * k * 0.5 / 80) for k in range(1, 25)])
    assert np.allclose(c, np.sqrt(2 / 80) * dct(np.eye(80)[:, 0] * 2.0, type=2, norm="ortho")[1:25])
    expected = (10 / math.log(10)) * math.sqrt(2 * float((c**2).sum()))
    assert math.isclose(mcd(ref, test), expected, rel_tol=1e-9)
    assert math.isclose(MCD_K, 10 / math.log(10) * math.sqrt(2))


def test_mcd_crops_to_the_shorter() -> None:
    a = np.random.RandomState(0).randn(80, 10)
    assert mcd(a, a[:, :7]) == 0.0


def _speechlike(sr: int, seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    rng = np.random.RandomState(seed)
    t = np.arange(int(sr * seconds)) / sr
    env = (np.sin(2 * np.pi * 3 * t) > 0).astype(float)
    return (env * (np.sin(2 * np.pi * 180 * t) + 0.3 * rng.randn(len(t)))).astype(np.float32) * 0.3


def test_pesq_and_stoi_rank_clean_above_noisy() -> None:
    sr = 22050
    ref = _speechlike(sr)
    noisy = ref + 0.3 * np.random.RandomState(1).randn(len(ref)).astype(np.float32)
    assert pesq_wb(ref, ref, sr) > pesq_wb(ref, noisy, sr)
    assert stoi(ref, ref, sr) > 0.99 > stoi(ref, noisy, sr)


def test_too_short_or_silent_gives_nan_not_an_exception() -> None:
    assert math.isnan(stoi(np.zeros(100), np.zeros(100), 22050))
    assert math.isnan(pesq_wb(np.zeros(22050), np.zeros(22050), 22050))
