"""The cut plan: where speech is, and where a long recording is cut into clips (pure functions).

1. ``speech_regions``: hysteresis over silero-vad's per-frame speech probabilities;
2. ``refine_regions``: region edges moved to the 10 ms energy (the VAD's LSTM lets go ~70 ms late);
3. ``plan_clips``: every pause >= ``split_pause_s`` is a cut. A stretch still longer than
   ``max_clip_s`` is cut at its longest pause, recursively, however short that pause is; a single
   region still too long (speech joined by breaths the VAD does not hear, ~0.1-0.2 s) is cut in its
   quietest stretch (``cut_cost``: the loudest 10 ms frame within +-40 ms, so a stop closure inside a
   word, 50-80 ms of near silence between loud frames, costs more than a breath). Pieces shorter than
   ``min_clip_s`` join a neighbour across a pause <= ``max_merge_pause_s`` when the result still fits.
   Speech at a file edge is ``truncated`` only when the recording is loud at that edge (a word is cut
   there); speech that is complete but close to the edge is kept, with what margin the file has.

Cuts that are not a clear pause (a pause under ``split_pause_s``, a quiet stretch) can be checked
against word timings (``CutCheck``, from the ASR in smart_segmenter): a cut whose clip edge falls in
a recognised word moves to a word edge inside its pause, or, when the pause has none, is skipped
for the next-best one (the next-longest pause, the next-quietest stretch outside that word); when
every candidate is in a word, the best one is taken anyway.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ttsops.data.manifest import Reason


@dataclass(frozen=True)
class SegmenterConfig:
    sample_rate: int = 22050
    min_clip_s: float = 1.0
    max_clip_s: float = 10.0
    lead_margin_s: float = 0.25
    tail_margin_s: float = 0.15
    split_pause_s: float = 0.28  # 0.25 now and then cut at a word-final stop closure masked by noise
    max_merge_pause_s: float = 0.8
    # a long run is cut where both sides keep at least this much speech, when any pause allows
    min_piece_s: float = 2.0
    onset: float = 0.5  # speech probability that starts a region
    offset: float = 0.35  # ... and that ends it
    min_silence_s: float = 0.1  # shorter gaps are inside a region
    min_speech_s: float = 0.1  # shorter regions are blips, dropped
    max_end_pullback_s: float = 0.08
    max_start_pushback_s: float = 0.1
    target_level_dbfs: float = -20.0
    min_level_dbfs: float = -45.0
    # estimated SNR; pocketsphinx WER on flite: 0.16 clean, 0.35 at 30 dB, 0.83 at 20 dB (white noise)
    min_snr_db: float = 25.0
    max_clipped_ratio: float = 0.001  # share of samples at |x| >= 0.99
    min_source_sr: int = 8000
    edge_guard_s: float = 0.03  # speech this close to a file edge was cut off by the recording
    # cuts that are not a clear pause are checked against ASR word timings (pocketsphinx, a few
    # seconds around each); a clip edge more than word_margin_s inside a recognised word is moved
    # to a word edge in its pause or, when there is none, the cut goes to the next-best place
    word_check: bool = True
    word_margin_s: float = 0.02

    def __post_init__(self) -> None:
        if not 0 < self.min_clip_s < self.max_clip_s:
            raise ValueError(f"need 0 < min_clip_s < max_clip_s, got {self.min_clip_s=}, {self.max_clip_s=}")
        if not 0 <= self.offset <= self.onset <= 1:
            raise ValueError(f"need 0 <= offset <= onset <= 1, got {self.offset=}, {self.onset=}")
        if min(self.lead_margin_s, self.tail_margin_s) < 0 or self.split_pause_s <= 0:
            raise ValueError(f"margins must be >= 0 and split_pause_s > 0, got {self.lead_margin_s=}, "
                             f"{self.tail_margin_s=}, {self.split_pause_s=}")  # fmt: skip


# --- pure functions: regions, plan, statistics -----------------------------------------------
def speech_regions(probs: np.ndarray, frame_s: float, cfg: SegmenterConfig) -> list[tuple[float, float]]:
    """Hysteresis over frame probabilities -> [(start_s, end_s)], short gaps merged, blips dropped."""
    raw: list[list[int]] = []
    start = -1
    for i, p in enumerate(probs):
        if start < 0 and p >= cfg.onset:
            start = i
        elif start >= 0 and p < cfg.offset:
            raw.append([start, i])
            start = -1
    if start >= 0:
        raw.append([start, len(probs)])
    merged: list[list[int]] = []
    for r in raw:
        if merged and (r[0] - merged[-1][1]) * frame_s < cfg.min_silence_s:
            merged[-1][1] = r[1]
        else:
            merged.append(r)
    return [(a * frame_s, b * frame_s) for a, b in merged if (b - a) * frame_s >= cfg.min_speech_s]


def refine_regions(
    regions: list[tuple[float, float]], energy_db: np.ndarray, threshold_db: float, cfg: SegmenterConfig
) -> list[tuple[float, float]]:
    """Move each start back over frames above the threshold (at most ``max_start_pushback_s``), and
    pull each end back to the last run of 3 frames above it (at most ``max_end_pullback_s``)."""
    above = energy_db > threshold_db
    out: list[tuple[float, float]] = []
    for a, b in regions:
        ia, ib = int(round(a * 100)), min(int(round(b * 100)), len(above))
        s, floor = (
            ia,
            max(ia - int(round(cfg.max_start_pushback_s * 100)), int(round(out[-1][1] * 100)) if out else 0),
        )
        while s > floor and s - 1 < len(above) and above[s - 1]:
            s -= 1
        win = above[ia : min(ib + 4, len(above))]
        runs = np.flatnonzero(win[:-2] & win[1:-1] & win[2:]) if len(win) >= 3 else np.zeros(0, int)
        e = ia + int(runs[-1]) + 3 if len(runs) else ia
        e = min(ib, max(e, ib - int(round(cfg.max_end_pullback_s * 100))))
        out.append((s / 100, max(e, s + 1) / 100))
    return out


def cut_edges(end: float, start: float, lead: float, tail: float) -> tuple[float, float]:
    """Where the clip edges go around a pause from ``end`` (speech before) to ``start`` (speech
    after): ``tail`` after and ``lead`` before, a pause shorter than both shared in proportion
    (then the two edges meet at one point, so a clip never holds its neighbour's speech)."""
    gap = start - end
    share = lead / (lead + tail) if lead + tail > 0 else 0.5
    return end + min(tail, gap * (1 - share)), start - min(lead, gap * share)


WordsNear = Callable[[float], list[tuple[float, float]]]  # the recognised words around a time


@dataclass(frozen=True)
class CutCheck:
    """Checks a cut against the words ``words_near`` knows: a cut whose clip edges (``cut_edges``)
    fall more than ``margin`` inside a word (free-decode word edges are ~10-30 ms loose, and a
    breath is often handed to a neighbouring word) moves to the nearest point of its pause outside
    every word, a word edge (kept in ``pins``), or, when the pause has none, is vetoed."""

    words_near: WordsNear
    lead: float
    tail: float
    margin: float = 0.0
    pins: dict[tuple[float, float], tuple[float, float]] = field(default_factory=dict)

    def clear(self, end: float, start: float) -> bool:
        """Can the pause (end, start) be cut without cutting a word? (Pins the edges if moved.)"""
        words = [(a + self.margin, b - self.margin) for a, b in self.words_near((end + start) / 2)]

        def inside(t: float) -> bool:
            return any(a < t < b for a, b in words)

        edges = cut_edges(end, start, self.lead, self.tail)
        if not any(inside(t) for t in edges):
            return True
        mid = sum(edges) / 2
        points = sorted({end, start, *(t for w in words for t in w if end <= t <= start)}, key=lambda t: abs(t - mid))
        t = next((t for t in points if not inside(t)), None)
        if t is None:
            return False
        self.pins[(end, start)] = (t, t)
        return True

    def edges(self, end: float, start: float) -> tuple[float, float]:
        return self.pins.get((end, start)) or cut_edges(end, start, self.lead, self.tail)


@dataclass
class PlannedClip:
    speech_start: float
    speech_end: float
    start: float = 0.0
    end: float = 0.0
    reason: Reason | None = None


def _split_long(
    group: list[tuple[float, float]], limit: float, piece: float, check: CutCheck | None = None
) -> list[list[tuple[float, float]]]:
    """Cut a group longer than ``limit`` at its longest pause, recursively; pauses that leave at
    least ``piece`` seconds of speech on both sides first (in real speech the longest pause in a run
    is now and then a word-final stop closure a few syllables from a breath: "he was not | an ill");
    with ``check``, the longest one whose cut is in no word."""
    if group[-1][1] - group[0][0] <= limit or len(group) == 1:
        return [group]
    gaps = [group[i + 1][0] - group[i][1] for i in range(len(group) - 1)]
    roomy = [group[i][1] - group[0][0] >= piece <= group[-1][1] - group[i + 1][0] for i in range(len(gaps))]
    order = sorted(range(len(gaps)), key=lambda i: (not roomy[i], -gaps[i]))  # stable: first on ties
    clear = (i for i in order if check is None or check.clear(group[i][1], group[i + 1][0]))
    k = next(clear, order[0]) + 1
    return _split_long(group[:k], limit, piece, check) + _split_long(group[k:], limit, piece, check)


CUT_HALF_WIDTH = 4  # 10 ms frames each side of a cut that must be quiet too (a 90 ms window)


def cut_cost(energy_db: np.ndarray, half_width: int = CUT_HALF_WIDTH) -> np.ndarray:
    """Per 10 ms frame, the cost of cutting there: the loudest frame within ``half_width`` frames.

    A breath between words (~0.1 s of near silence) is cheap; a stop closure inside a word is as
    quiet at its centre but has loud frames within 40 ms, so it costs more."""
    if len(energy_db) == 0:
        return np.zeros(0, np.float32)
    padded = np.pad(energy_db, half_width, mode="edge")
    return np.lib.stride_tricks.sliding_window_view(padded, 2 * half_width + 1).max(axis=1)


def split_at_valleys(
    region: tuple[float, float],
    cost: np.ndarray,
    energy_db: np.ndarray,
    limit: float,
    shortest: float,
    check: CutCheck | None = None,
) -> list[tuple[float, float]]:
    """Cut a region longer than ``limit`` in its cheapest stretch (``cut_cost``), recursively, keeping
    both pieces at least ``shortest`` long; the quiet stretch around the cut becomes the pause.
    With ``check``, a stretch that cannot be cut outside a word rules out that word's frames, and
    the cheapest stretch left is tried (the cheapest overall when none is clear)."""
    a, b = region
    lo, hi = int(np.ceil((a + shortest) * 100)), int((b - shortest) * 100)
    hi = min(hi, len(cost) - 1)
    if b - a <= limit or hi <= lo:
        return [region]
    allowed = cost[lo : hi + 1].astype(np.float64)
    first = q = _valley(lo + int(np.argmin(allowed)), a, b, cost, energy_db)
    while check is not None and not check.clear(q[0] / 100, (q[1] + 1) / 100):
        for w0, w1 in check.words_near((q[0] + q[1] + 1) / 200):  # rule out the words around it
            if w0 < (q[1] + 1) / 100 and w1 > q[0] / 100:
                allowed[max(int(w0 * 100) - lo, 0) : max(int(np.ceil(w1 * 100)) + 1 - lo, 0)] = np.inf
        allowed[max(q[0] - lo, 0) : max(q[1] + 1 - lo, 0)] = np.inf  # and the stretch tried
        if not np.isfinite(allowed).any():
            q = first
            break
        q = _valley(lo + int(np.argmin(allowed)), a, b, cost, energy_db, MAX_VALLEY_SIDE)
    left, right = (a, max(q[0] / 100, a + 0.01)), (min((q[1] + 1) / 100, b - 0.01), b)
    return (split_at_valleys(left, cost, energy_db, limit, shortest, check)
            + split_at_valleys(right, cost, energy_db, limit, shortest, check))  # fmt: skip


MAX_VALLEY_SIDE = 15  # 10 ms frames a quiet stretch widens by on each side of its centre, at most


def _valley(
    i: int, a: float, b: float, cost: np.ndarray, energy_db: np.ndarray, side: int | None = None
) -> tuple[int, int]:
    """(first, last) frame of the quiet stretch around frame ``i`` within the region (a, b), at most
    ``side`` frames each way: a next-best ``i`` (the quietest ruled out) is louder, and its level
    could span whole words."""
    level = cost[i] + 1.0  # every frame within the window is at most cost[i]: widen over the valley
    lo, hi = a * 100, min(b * 100, len(energy_db))
    if side is not None:
        lo, hi = max(lo, i - side), min(hi, i + side + 1)
    q0, q1 = i, i
    while q0 - 1 > lo and energy_db[q0 - 1] <= level:
        q0 -= 1
    while q1 + 1 < hi and energy_db[q1 + 1] <= level:
        q1 += 1
    return q0, q1


def open_edges(energy_db: np.ndarray, threshold_db: float, frames: int = 2) -> tuple[bool, bool]:
    """(start, end): is the recording loud (above the speech threshold) in its first / last
    ``frames`` 10 ms frames, i.e. does it cut into a sound? Frame 0 and the last frame are half
    zero padding, so they are skipped."""
    if len(energy_db) < 2 * frames + 2:
        return True, True
    return bool(np.max(energy_db[1 : 1 + frames]) > threshold_db), bool(
        np.max(energy_db[-1 - frames : -1]) > threshold_db
    )


def plan_clips(
    regions: list[tuple[float, float]],
    total_s: float,
    cfg: SegmenterConfig,
    energy_db: np.ndarray | None = None,
    edges_open: tuple[bool, bool] = (True, True),
    words_near: WordsNear | None = None,
) -> list[PlannedClip]:
    """Group speech regions into clips (see the module docstring); margins never overlap.

    ``energy_db`` (10 ms frames): regions too long for a clip are cut at their quietest stretch;
    without it they are rejected ``too_long``. ``edges_open``: whether the recording cuts into a
    sound at its start / end (``open_edges``); speech within ``edge_guard_s`` of an open edge is
    ``truncated``. ``words_near``: the recognised words around a time (``CutCheck``), asked only
    about cuts inside stretches longer than a clip."""
    if not regions:
        return []
    lead, tail = cfg.lead_margin_s, cfg.tail_margin_s
    limit = cfg.max_clip_s - lead - tail
    shortest = cfg.min_clip_s - lead - tail
    check = CutCheck(words_near, lead, tail, cfg.word_margin_s) if words_near is not None else None
    edges = check.edges if check is not None else functools.partial(cut_edges, lead=lead, tail=tail)
    if energy_db is not None:
        cost = cut_cost(energy_db)
        regions = [p for r in regions
                   for p in split_at_valleys(r, cost, energy_db, limit, cfg.min_piece_s, check)]  # fmt: skip
    groups: list[list[tuple[float, float]]] = [[regions[0]]]
    for prev, cur in zip(regions, regions[1:], strict=False):
        if cur[0] - prev[1] >= cfg.split_pause_s:
            groups.append([cur])
        else:
            groups[-1].append(cur)
    spans = [[p[0][0], p[-1][1]] for g in groups for p in _split_long(g, limit, cfg.min_piece_s, check)]
    spans = _merge_short(spans, shortest, limit, cfg.max_merge_pause_s)
    clips = []
    for k, (s, e) in enumerate(spans):
        start = edges(spans[k - 1][1], s)[1] if k > 0 else s - min(lead, s)
        end = edges(e, spans[k + 1][0])[0] if k + 1 < len(spans) else e + min(tail, total_s - e)
        reason = None
        if (s < cfg.edge_guard_s and edges_open[0]) or (e > total_s - cfg.edge_guard_s and edges_open[1]):
            reason = Reason.TRUNCATED
        elif end - start < cfg.min_clip_s:
            reason = Reason.TOO_SHORT
        elif end - start > cfg.max_clip_s:
            reason = Reason.TOO_LONG
        clips.append(PlannedClip(s, e, start, end, reason))
    return clips


def _merge_short(
    spans: list[list[float]], shortest: float, longest: float, max_pause: float
) -> list[list[float]]:
    """Join each span shorter than ``shortest`` to its nearer neighbour when the pause between is
    at most ``max_pause`` and the result is at most ``longest``."""
    spans = [list(x) for x in spans]
    i = 0
    while i < len(spans):
        if spans[i][1] - spans[i][0] < shortest:
            gap_l = spans[i][0] - spans[i - 1][1] if i > 0 else np.inf
            gap_r = spans[i + 1][0] - spans[i][1] if i + 1 < len(spans) else np.inf
            lo, hi = (i - 1, i) if gap_l <= gap_r else (i, i + 1)
            if min(gap_l, gap_r) <= max_pause and spans[hi][1] - spans[lo][0] <= longest:
                spans[lo] = [spans[lo][0], spans[hi][1]]
                del spans[hi]
                i = max(lo - 1, 0)
                continue
        i += 1
    return spans
