"""Word timings for the segmenter's cut check: where a long run of speech must be cut at a point
that is not a clear pause, is that point inside a word?

Energy and VAD cannot always tell: a ~100 ms silent dip inside a word (a stop closure, a
sentence-final "was" trailing off) can be quieter than the breath after it. pocketsphinx (the
bundled US-English model, as in transcribe.py) is run on a window of ``window_s`` around the time
asked about, only when asked, so a recording with clear pauses costs nothing; its words are trusted
away from the window's edges (a word cut by the window is misrecognised) and reused for later
questions about the same stretch. What counts as "in a word" (with a margin for loose
word edges) is ``segment_plan.CutCheck``'s decision. Measured cost and effect: README.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

logger = logging.getLogger(__name__)

Recogniser = Callable[[np.ndarray], list[tuple[str, float, float]]]  # wav16 -> (word, start, end)


class AsrWords:
    """``words(t)``: (start, end) of the words recognised around ``t`` seconds."""

    def __init__(
        self,
        wav16: np.ndarray,
        recognise: Recogniser,
        sample_rate: int = 16000,
        window_s: float = 3.0,
    ):
        if window_s <= 0:
            raise ValueError(f"need window_s > 0, got {window_s=}")
        self.wav, self.recognise, self.sr, self.window_s = wav16, recognise, sample_rate, window_s
        self.total_s = len(wav16) / sample_rate
        self.decoded_s = 0.0  # audio run through the recogniser so far (its cost)
        self._windows: list[tuple[float, float, list[tuple[float, float]]]] = []  # trusted span, words

    def __call__(self, t: float) -> list[tuple[float, float]]:
        words = next((w for a, b, w in self._windows if a <= t <= b), None)
        return self._decode_around(t) if words is None else words

    def _decode_around(self, t: float) -> list[tuple[float, float]]:
        a = min(max(t - self.window_s / 2, 0.0), max(self.total_s - self.window_s, 0.0))
        b = min(a + self.window_s, self.total_s)
        chunk = self.wav[int(a * self.sr) : int(b * self.sr)]
        words = [(a + ws, a + we) for _, ws, we in self.recognise(chunk)]
        self.decoded_s += b - a
        guard = self.window_s / 3  # trusted: the middle third, or up to a file edge
        self._windows.append((a + guard if a > 0 else 0.0, b - guard if b < self.total_s else b, words))
        logger.debug("word check: decoded %.2f-%.2f s for a cut at %.2f s", a, b, t)
        return words
