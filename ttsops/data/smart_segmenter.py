"""Cut long recordings into training clips: silero-vad, cuts at the longest pauses, quality gates.

Per source file (one bad file never stops the batch; it becomes a record with a reason):
1. decode in blocks (any libsndfile format, any rate, any channel count), mix to mono, and stream
   a 16 kHz copy for analysis (an hour of audio costs ~230 MB there, the source is never fully
   loaded at its own rate);
2. speech probability per 32 ms frame from silero-vad (vad.py);
3. speech regions and the cut plan (segment_plan.py): hysteresis, edges refined on 10 ms energy;
   every pause >= ``split_pause_s`` is a cut; a stretch still longer than ``max_clip_s`` is cut at
   its longest pause however short, and speech with no pause the VAD hears at its quietest stretch
   (a breath), so long runs become clips instead of ``too_long``; short pieces join a neighbour;
4. those cuts (not the clear pauses) are checked against pocketsphinx word timings around them
   (word_check.py, ``word_check``): one in a recognised word gives way to the next-best cut;
5. each clip gets ``lead_margin_s`` of context before and ``tail_margin_s`` after its speech (the
   lead is longer: in noise the VAD notices soft onsets such as glides up to ~0.2 s late, while
   ends are refined on energy). A pause shorter than both margins is shared between them in
   proportion, so a clip never holds a neighbour's speech. The clip is then resampled to
   ``sample_rate`` mono, loudness-normalised (active speech level to ``target_level_dbfs``, peak
   at most -1 dBFS) and written, unless it is clipped, too quiet, too noisy (SNR estimated against
   the file's non-speech frames), out of length range, or cut off by the file's start or end
   (``truncated``: only when the recording is loud at that edge; complete speech near it is kept).

The summary says, per rejection reason, how many clips and seconds of speech it cost, and what a
gate ``RELAX_SNR_DB`` (5 dB) lower would keep of the ``too_noisy`` clips.

    ttsops data segment RAW_DIR OUT_DIR [--workers 2] [--min-clip-s 1 --max-clip-s 10]
"""

from __future__ import annotations

import functools
import importlib.util
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
    speech_lost_s,
    write_jsonl,
)
from ttsops.data.segment_plan import (
    PlannedClip,
    SegmenterConfig,
    open_edges,
    plan_clips,
    refine_regions,
    speech_regions,
)
from ttsops.data.transcribe import PocketsphinxBackend, TranscribeConfig
from ttsops.data.vad import VAD_FRAME, VAD_SR, SileroVad, frame_energy_db, noise_floor_db
from ttsops.data.word_check import AsrWords, Recogniser
from ttsops.infra.atomic import atomic_write_text

logger = logging.getLogger(__name__)

PEAK_LIMIT = 10 ** (-1 / 20)


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
    path: Path,
    key: str,
    source: str,
    out_dir: Path,
    cfg: SegmenterConfig,
    vad: SileroVad,
    recognise: Recogniser | None = None,
) -> list[dict[str, Any]]:
    """All segment records of one source file; never raises for bad audio. ``recognise``: the ASR
    whose word timings check the cuts inside long runs (``cfg.word_check``; None: unchecked)."""
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
    words = AsrWords(wav16, recognise, VAD_SR) if recognise else None
    clips = plan_clips(regions, total_s, cfg, energy, open_edges(energy, thr_db), words)
    if words is not None and words.decoded_s:
        logger.debug("%s: word check decoded %.1f s of %.1f s", source, words.decoded_s, total_s)
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
    rejected_speech_s: dict[str, float]  # seconds of speech each reason cost
    lower_gate: dict[str, float]  # what a gate RELAX_SNR_DB lower keeps of the too_noisy clips


RELAX_SNR_DB = 5.0


def lower_gate_gain(
    records: list[dict[str, Any]], min_snr_db: float, relax_db: float = RELAX_SNR_DB
) -> dict[str, float]:
    """{snr_db, clips, speech_s}: the too_noisy clips a gate ``relax_db`` lower would keep (the SNR
    gate is the last one a clip meets, so they pass every other gate), and their speech seconds."""
    gate = min_snr_db - relax_db
    rescued = [
        r for r in records if r.get("reason") == Reason.TOO_NOISY.value and r.get("snr_db", -1e9) >= gate
    ]
    seconds = sum(r["speech_end"] - r["speech_start"] for r in rescued)
    return {"snr_db": gate, "clips": len(rescued), "speech_s": round(seconds, 2)}


def rejection_line(summary: SegmentSummary) -> str:
    """Per reason: clips and seconds of speech lost; for too_noisy what a lower gate keeps, e.g.
    ``too_noisy: 3, 21.4 s of speech (--min-snr-db 20 keeps 2, 14.0 s)``; "none" when none."""
    parts = []
    for reason, n in summary.rejected.items():
        part = f"{reason}: {n}, {summary.rejected_speech_s.get(reason, 0.0):.1f} s of speech"
        if reason == Reason.TOO_NOISY.value:
            g = summary.lower_gate
            part += f" (--min-snr-db {g['snr_db']:g} keeps {int(g['clips'])}, {g['speech_s']:.1f} s)"
        parts.append(part)
    return "; ".join(parts) or "none"


@functools.lru_cache(maxsize=1)
def _vad() -> SileroVad:  # one ONNX session per worker process
    return SileroVad()


@functools.lru_cache(maxsize=1)
def _pocketsphinx() -> PocketsphinxBackend:  # one decoder per worker process, loaded on first use
    return PocketsphinxBackend(TranscribeConfig())


def asr_words(wav16: np.ndarray) -> list[tuple[str, float, float]]:
    """pocketsphinx word timings, with the transcription backend's settings."""
    return _pocketsphinx().words(wav16)


@functools.lru_cache(maxsize=1)
def word_recogniser() -> Recogniser | None:
    """The cut check's ASR, or None (warned once per process) when pocketsphinx is not installed."""
    if importlib.util.find_spec("pocketsphinx") is None:
        logger.warning("pocketsphinx is not installed: cuts inside long runs are not checked for words")
        return None
    return asr_words


def _segment_job(job: tuple[str, str, str, str, SegmenterConfig]) -> list[dict[str, Any]]:
    path, key, source, out_dir, cfg = job
    recognise = word_recogniser() if cfg.word_check else None
    try:
        return segment_file(Path(path), key, source, Path(out_dir), cfg, _vad(), recognise)
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
        round(sum(r["duration"] for r in kept) / 3600, 4), speech_lost_s(records),
        lower_gate_gain(records, cfg.min_snr_db),
    )  # fmt: skip
    info = {k: v for k, v in asdict(summary).items() if k != "out_dir"}
    atomic_write_text(out / "segments_summary.json", json.dumps({**info, "config": asdict(cfg)}, indent=2))
    logger.info("segmented %d sources (%d already done): %d clips kept, rejected %s",
                summary.sources, summary.skipped, summary.kept, rejection_line(summary))  # fmt: skip
    return summary
