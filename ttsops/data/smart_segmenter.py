"""Cut long recordings into training clips: silero-vad, cuts at the longest pauses, quality gates.

Per source file (one bad file never stops the batch; it becomes a record with a reason):
1. decode in blocks (any libsndfile format, any rate, any channel count), mix to mono, and stream
   a 16 kHz copy for analysis (an hour of audio costs ~230 MB there, the source is never fully
   loaded at its own rate);
2. speech probability per 32 ms frame from silero-vad (vad.py);
3. speech regions by hysteresis, edges refined on 10 ms energy (the VAD's LSTM lets go of speech
   ~70 ms late; the end is pulled back to the last frame clearly above the noise floor, by at most
   ``max_end_pullback_s``);
4. every pause >= ``split_pause_s`` is a cut; a stretch still longer than ``max_clip_s`` is cut at
   its longest pause, recursively; pieces shorter than ``min_clip_s`` join a neighbour across a
   pause <= ``max_merge_pause_s`` when the result still fits, else are rejected;
5. each clip gets ``lead_margin_s`` of context before and ``tail_margin_s`` after its speech (the
   lead is longer: in noise the VAD notices soft onsets such as glides up to ~0.2 s late, while
   ends are refined on energy). A pause shorter than both margins is shared between them in
   proportion, so a clip never holds a neighbour's speech. The clip is then resampled to
   ``sample_rate`` mono, loudness-normalised (active speech level to ``target_level_dbfs``, peak
   at most -1 dBFS) and written, unless it is clipped, too quiet, too noisy (SNR estimated against
   the file's non-speech frames), out of length range, or runs into the file's start or end.

    ttsops data segment RAW_DIR OUT_DIR [--workers 2] [--min-clip-s 1 --max-clip-s 10]
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from ttsops.audio.io import save_wav
from ttsops.data.manifest import (
    PartStore,
    Reason,
    config_hash,
    count_reasons,
    discover_sources,
    file_fingerprint,
    parallel_map,
    write_jsonl,
)
from ttsops.data.vad import VAD_FRAME, VAD_SR, SileroVad, frame_energy_db, noise_floor_db
from ttsops.infra.atomic import atomic_write_text

logger = logging.getLogger(__name__)

PEAK_LIMIT = 10 ** (-1 / 20)


@dataclass(frozen=True)
class SegmenterConfig:
    sample_rate: int = 22050
    min_clip_s: float = 1.0
    max_clip_s: float = 10.0
    lead_margin_s: float = 0.25
    tail_margin_s: float = 0.15
    split_pause_s: float = 0.28  # 0.25 now and then cut at a word-final stop closure masked by noise
    max_merge_pause_s: float = 0.8
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


@dataclass
class PlannedClip:
    speech_start: float
    speech_end: float
    start: float = 0.0
    end: float = 0.0
    reason: Reason | None = None


def _split_long(group: list[tuple[float, float]], limit: float) -> list[list[tuple[float, float]]]:
    if group[-1][1] - group[0][0] <= limit or len(group) == 1:
        return [group]
    gaps = [group[i + 1][0] - group[i][1] for i in range(len(group) - 1)]
    k = int(np.argmax(gaps)) + 1  # the longest pause
    return _split_long(group[:k], limit) + _split_long(group[k:], limit)


def plan_clips(regions: list[tuple[float, float]], total_s: float, cfg: SegmenterConfig) -> list[PlannedClip]:
    """Group speech regions into clips (see the module docstring); margins never overlap."""
    if not regions:
        return []
    groups: list[list[tuple[float, float]]] = [[regions[0]]]
    for prev, cur in zip(regions, regions[1:], strict=False):
        if cur[0] - prev[1] >= cfg.split_pause_s:
            groups.append([cur])
        else:
            groups[-1].append(cur)
    lead, tail = cfg.lead_margin_s, cfg.tail_margin_s
    limit = cfg.max_clip_s - lead - tail
    spans = [[p[0][0], p[-1][1]] for g in groups for p in _split_long(g, limit)]
    spans = _merge_short(spans, cfg.min_clip_s - lead - tail, limit, cfg.max_merge_pause_s)
    share = lead / (lead + tail) if lead + tail > 0 else 0.5
    clips = []
    for k, (s, e) in enumerate(spans):
        left = s - spans[k - 1][1] if k > 0 else s
        right = spans[k + 1][0] - e if k + 1 < len(spans) else total_s - e
        start = s - min(lead, left * share if k > 0 else left)
        end = e + min(tail, right * (1 - share) if k + 1 < len(spans) else right)
        reason = None
        if s < cfg.edge_guard_s or e > total_s - cfg.edge_guard_s:
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


def clipped_ratio(wav: np.ndarray) -> float:
    return float(np.mean(np.abs(wav) >= 0.99)) if len(wav) else 0.0


def speech_stats(
    energy_db: np.ndarray, start: float, end: float, threshold_db: float, noise_db: float
) -> tuple[float, float]:
    """(active speech level dBFS, SNR dB) of the 10 ms frames in [start, end] above the threshold."""
    seg = energy_db[int(start * 100) : int(np.ceil(end * 100))]
    active = seg[seg > threshold_db]
    if len(active) == 0:
        return -120.0, 0.0
    power = float(np.mean(10 ** (active.astype(np.float64) / 10)))
    noise = 10 ** (noise_db / 10)
    snr = 10 * np.log10(max(power - noise, 1e-12) / noise)
    return 10 * np.log10(power), float(min(snr, 100.0))


def normalise(wav: np.ndarray, level_dbfs: float, target_dbfs: float) -> np.ndarray:
    out = wav * np.float32(10 ** ((target_dbfs - level_dbfs) / 20))
    peak = float(np.max(np.abs(out))) if len(out) else 0.0
    if peak > PEAK_LIMIT:
        out *= np.float32(PEAK_LIMIT / peak)
    return out.astype(np.float32)


# --- one file ----------------------------------------------------------------------------------
def read_mono_16k(path: Path, block_s: float = 30.0) -> tuple[np.ndarray, int, int]:
    """(mono 16 kHz float32, source rate, source frames), decoded and resampled block by block."""
    with sf.SoundFile(str(path)) as f:
        sr, frames = f.samplerate, f.frames
        rs = soxr.ResampleStream(sr, VAD_SR, 1, dtype="float32")
        out = [
            rs.resample_chunk(b.mean(axis=1), last=False)
            for b in f.blocks(int(sr * block_s), dtype="float32", always_2d=True)
        ]
        out.append(rs.resample_chunk(np.zeros(0, np.float32), last=True))
    return np.concatenate(out).astype(np.float32), sr, frames


def _file_record(key: str, source: str, reason: Reason, detail: str = "") -> dict[str, Any]:
    return {
        "id": key,
        "source": source,
        "kept": False,
        "reason": reason.value,
        "detail": detail,
        "start": 0.0,
        "end": 0.0,
        "duration": 0.0,
    }


def segment_file(
    path: Path, key: str, source: str, out_dir: Path, cfg: SegmenterConfig, vad: SileroVad
) -> list[dict[str, Any]]:
    """All segment records of one source file; never raises for bad audio."""
    if path.stat().st_size == 0:
        return [_file_record(key, source, Reason.EMPTY, "0 bytes")]
    try:
        wav16, sr, frames = read_mono_16k(path)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError) as e:
        return [_file_record(key, source, Reason.UNREADABLE, str(e).splitlines()[0][:200])]
    if frames == 0 or len(wav16) == 0:
        return [_file_record(key, source, Reason.EMPTY)]
    if sr < cfg.min_source_sr:
        return [_file_record(key, source, Reason.UNREADABLE, f"sample rate {sr} < {cfg.min_source_sr}")]
    total_s = frames / sr
    probs = vad.probs(wav16)
    energy = frame_energy_db(wav16)
    noise_db, thr_db = noise_floor_db(energy, probs)
    regions = refine_regions(speech_regions(probs, VAD_FRAME / VAD_SR, cfg), energy, thr_db, cfg)
    clips = plan_clips(regions, total_s, cfg)
    if not clips:
        return [_file_record(key, source, Reason.NO_SPEECH)]
    records = []
    with sf.SoundFile(str(path)) as f:
        for n, clip in enumerate(clips, 1):
            records.append(
                _cut_clip(f, clip, f"{key}_{n:04d}", source, out_dir, cfg, energy, thr_db, noise_db)
            )
    return records


def _cut_clip(
    f: sf.SoundFile,
    clip: PlannedClip,
    cid: str,
    source: str,
    out_dir: Path,
    cfg: SegmenterConfig,
    energy: np.ndarray,
    thr_db: float,
    noise_db: float,
) -> dict[str, Any]:
    level, snr = speech_stats(energy, clip.speech_start, clip.speech_end, thr_db, noise_db)
    f.seek(int(clip.start * f.samplerate))
    frames = int(round((clip.end - clip.start) * f.samplerate))
    native = f.read(frames, dtype="float32", always_2d=True).mean(axis=1)
    clipped = clipped_ratio(native)
    reason = clip.reason
    if reason is None:
        if clipped > cfg.max_clipped_ratio:
            reason = Reason.CLIPPED
        elif level < cfg.min_level_dbfs:
            reason = Reason.TOO_QUIET
        elif snr < cfg.min_snr_db:
            reason = Reason.TOO_NOISY
    times = {"start": clip.start, "end": clip.end, "duration": clip.end - clip.start,
             "speech_start": clip.speech_start, "speech_end": clip.speech_end}  # fmt: skip
    rec: dict[str, Any] = {"id": cid, "source": source, **{k: round(v, 3) for k, v in times.items()},
                           "level_dbfs": round(level, 2), "snr_db": round(snr, 2), "clipped_ratio": round(clipped, 6),
                           "kept": reason is None, "reason": reason.value if reason else None}  # fmt: skip
    if reason is None:
        wav = (
            native
            if f.samplerate == cfg.sample_rate
            else soxr.resample(native, f.samplerate, cfg.sample_rate)
        )
        wav = normalise(np.asarray(wav, np.float32), level, cfg.target_level_dbfs)
        save_wav(out_dir / "clips" / f"{cid}.wav", wav, cfg.sample_rate)
        rec.update(path=f"clips/{cid}.wav", sample_rate=cfg.sample_rate)
    return rec


# --- a batch of files ------------------------------------------------------------------------
@dataclass
class SegmentSummary:
    out_dir: Path
    sources: int
    skipped: int  # already done by an earlier run
    kept: int
    rejected: dict[str, int]
    kept_hours: float


@functools.lru_cache(maxsize=1)
def _vad() -> SileroVad:  # one ONNX session per worker process
    return SileroVad()


def _segment_job(job: tuple[str, str, str, str, SegmenterConfig]) -> list[dict[str, Any]]:
    path, key, source, out_dir, cfg = job
    try:
        return segment_file(Path(path), key, source, Path(out_dir), cfg, _vad())
    except Exception as e:  # a batch boundary: one file's surprise must not end the batch
        logger.exception("segmenting %s failed", path)
        return [_file_record(key, source, Reason.UNREADABLE, f"{type(e).__name__}: {e}"[:200])]


def segment(
    inputs: list[str | Path],
    out_dir: str | Path,
    cfg: SegmenterConfig | None = None,
    workers: int = 1,
    progress: bool = False,
) -> SegmentSummary:
    """Segment every source into ``out_dir/clips`` + ``out_dir/segments.jsonl``; resumable.

    A source whose part file (``parts/<key>.json``) matches its size, mtime and this config, and
    whose kept clips all exist, is not processed again."""
    cfg = cfg or SegmenterConfig()
    out = Path(out_dir)
    parts = PartStore(out / "parts", out)
    chash = config_hash(asdict(cfg))
    sources = discover_sources(inputs)
    jobs, stamps = [], {}
    for path, source, key in sources:
        stamps[key] = {"fingerprint": file_fingerprint(path), "config": chash, "source": source}
        if not parts.is_current(key, stamps[key]):
            for stale in (out / "clips").glob(f"{key}_[0-9][0-9][0-9][0-9].wav"):
                stale.unlink()
            jobs.append((str(path), key, source, str(out), cfg))
    for job, records in parallel_map(_segment_job, jobs, workers, f"segmenting {len(jobs)} files", progress):
        parts.write(job[1], stamps[job[1]], records)
    records = [r for _, _, key in sources for r in parts.records(key)]
    write_jsonl(out / "segments.jsonl", records)
    kept = [r for r in records if r["kept"]]
    summary = SegmentSummary(
        out, len(sources), len(sources) - len(jobs), len(kept), count_reasons(records),
        round(sum(r["duration"] for r in kept) / 3600, 4),
    )  # fmt: skip
    info = {k: v for k, v in asdict(summary).items() if k != "out_dir"}
    atomic_write_text(out / "segments_summary.json", json.dumps({**info, "config": asdict(cfg)}, indent=2))
    logger.info("segmented %d sources (%d already done): %d clips kept, rejected %s",
                summary.sources, summary.skipped, summary.kept, summary.rejected or "none")  # fmt: skip
    return summary
