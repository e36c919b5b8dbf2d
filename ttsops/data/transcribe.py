"""Transcribe clips with a pluggable offline ASR backend; per-clip confidence; cleaned text.

Backends (``BACKENDS``):
- ``pocketsphinx`` (default): the US-English acoustic model, dictionary and LM that ship inside the
  pocketsphinx 5.1.1 wheel, so it works offline with nothing to fetch. It is the only English model
  installable here that needs no download (vosk ships no English model on PyPI; whisper variants
  need hub weights). Measured here (benchmarks/README.md, "Data plane"): WER 0.18 on held-out flite
  clips (rms 0.14, slt 0.16, awb 0.21, kal16 0.21), 0.27 on the LibriVox clips of Debian's
  pocketsphinx-testdata, ~0.8 on espeak-ng; it is sensitive to broadband noise (flite: 0.27 at
  40 dB SNR white noise, 0.83 at 20 dB). Speed 7-9x real time on one core. Two settings differ
  from pocketsphinx's defaults, each measured side by side on both sets: ``fwdflat`` (a second
  flat-lexicon pass) off, ~15% faster at the same WER; ``maxhmmpf`` 5000 instead of 30000, 20-28%
  faster with identical transcripts.
  Confidence = the hypothesis posterior per word (``hyp.prob ** (1 / n_words)``), a geometric mean
  of word posteriors: median ~0.55-0.63 on flite, ~0.45 on LibriVox, ~0.2 on espeak speech (which
  pocketsphinx gets mostly wrong), so the default ``min_confidence`` 0.3 flags 16 of 20 espeak
  clips and 2 of 160 clean flite clips.
- ``faster-whisper``: only with ``model_dir``, a local CTranslate2 Whisper model directory (weights
  are never downloaded). Not a dependency: ``pip install faster-whisper``. Confidence =
  exp(mean token log-probability), weighted by segment length.

Output ``transcripts.jsonl``: ``id, path, text, normalized, confidence, low_confidence, backend,
duration, fingerprint``. Re-running skips clips already transcribed by the same backend whose
file did not change.

    ttsops data transcribe SEGMENTS_DIR [--backend pocketsphinx] [--workers 2]
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ttsops.audio.io import load_audio
from ttsops.data.manifest import (
    Reason,
    dumps,
    file_fingerprint,
    parallel_map,
    read_jsonl,
    safe_key,
    write_jsonl,
)
from ttsops.errors import ConfigError, DataError
from ttsops.text.cleaners import english_cleaners

logger = logging.getLogger(__name__)

ASR_SR = 16000
DEFAULT_MIN_CONFIDENCE = {"pocketsphinx": 0.3, "faster-whisper": 0.5}


@dataclass(frozen=True)
class TranscribeConfig:
    backend: str = "pocketsphinx"
    model_dir: str | None = None  # faster-whisper: a local CTranslate2 model directory
    min_confidence: float | None = None  # None: the backend's default (DEFAULT_MIN_CONFIDENCE)
    language: str = "en"
    fwdflat: bool = False  # pocketsphinx second pass
    maxhmmpf: int = 5000  # pocketsphinx: most HMMs searched per frame (its default is 30000)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown ASR backend {self.backend!r} (valid: {', '.join(BACKENDS)})")
        if self.min_confidence is not None and not 0 <= self.min_confidence <= 1:
            raise ConfigError(f"min_confidence must be in [0, 1], got {self.min_confidence}")

    @property
    def threshold(self) -> float:
        return DEFAULT_MIN_CONFIDENCE[self.backend] if self.min_confidence is None else self.min_confidence


@dataclass(frozen=True)
class AsrResult:
    text: str
    confidence: float


class AsrBackend(Protocol):
    name: str

    def transcribe(self, wav16: np.ndarray) -> AsrResult: ...


class PocketsphinxBackend:
    name = "pocketsphinx"

    def __init__(self, cfg: TranscribeConfig):
        from pocketsphinx import Decoder

        self.decoder = Decoder(loglevel="FATAL", fwdflat=cfg.fwdflat, maxhmmpf=cfg.maxhmmpf)

    def _decode(self, wav16: np.ndarray) -> None:
        pcm = (np.clip(wav16, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        # the front end adapts (noise estimate) across utterances: reset it (~0.05 ms), so a clip's
        # transcript does not depend on which clips a worker happened to decode before it
        self.decoder.reinit_feat()
        self.decoder.start_utt()
        self.decoder.process_raw(pcm, full_utt=True)
        self.decoder.end_utt()

    def words(self, wav16: np.ndarray) -> list[tuple[str, float, float]]:
        """(word, start s, end s) of the recognised words, silences and fillers left out (10 ms)."""
        self._decode(wav16)
        return [
            (s.word, s.start_frame / 100, (s.end_frame + 1) / 100)
            for s in self.decoder.seg()
            if not s.word.startswith(("<", "["))
        ]

    def transcribe(self, wav16: np.ndarray) -> AsrResult:
        self._decode(wav16)
        hyp = self.decoder.hyp()
        text = hyp.hypstr.strip() if hyp is not None else ""
        if not text:
            return AsrResult("", 0.0)
        # hyp.prob is the posterior of the whole word sequence: per word, take the geometric mean
        conf = float(hyp.prob) ** (1.0 / len(text.split()))
        return AsrResult(text, min(max(conf, 0.0), 1.0))


class FasterWhisperBackend:
    name = "faster-whisper"

    def __init__(self, cfg: TranscribeConfig):
        if not cfg.model_dir:
            raise ConfigError(
                "backend faster-whisper needs --model-dir DIR (a local CTranslate2 Whisper model)"
            )
        model_dir = Path(cfg.model_dir)
        missing = [f for f in ("model.bin", "tokenizer.json") if not (model_dir / f).is_file()]
        if missing:
            raise ConfigError(
                f"--model-dir {model_dir} lacks {', '.join(missing)} (weights are never downloaded)"
            )
        try:
            from faster_whisper import WhisperModel
        except ImportError as e:
            raise ImportError("backend faster-whisper is optional: pip install faster-whisper") from e
        self.language = cfg.language
        self.model = WhisperModel(
            str(model_dir), device="cpu", compute_type="int8", cpu_threads=1, local_files_only=True
        )

    def transcribe(self, wav16: np.ndarray) -> AsrResult:
        segments, _ = self.model.transcribe(
            wav16, language=self.language, beam_size=5, condition_on_previous_text=False
        )
        segs = list(segments)
        text = " ".join(s.text.strip() for s in segs).strip()
        if not text:
            return AsrResult("", 0.0)
        weights = np.array([max(len(s.tokens), 1) for s in segs], float)
        mean_logprob = float(np.average([s.avg_logprob for s in segs], weights=weights))
        return AsrResult(text, min(1.0, math.exp(mean_logprob)))


BACKENDS: dict[str, type[PocketsphinxBackend] | type[FasterWhisperBackend]] = {
    "pocketsphinx": PocketsphinxBackend,
    "faster-whisper": FasterWhisperBackend,
}


@functools.lru_cache(maxsize=2)
def get_backend(cfg: TranscribeConfig) -> AsrBackend:
    """One backend per process (models load once per worker)."""
    return BACKENDS[cfg.backend](cfg)


def transcribe_clip(path: str | Path, backend: AsrBackend) -> AsrResult:
    wav16, _ = load_audio(path, ASR_SR)
    return backend.transcribe(wav16)


# --- a batch of clips --------------------------------------------------------------------------
def list_clips(clips_dir: str | Path) -> list[tuple[str, Path]]:
    """(id, path) of the clips to transcribe: the kept clips of ``segments.jsonl`` when the
    directory has one, else every ``*.wav`` below it."""
    root = Path(clips_dir)
    if not root.is_dir():
        raise DataError(f"clips directory not found: {root}")
    manifest = root / "segments.jsonl"
    if manifest.is_file():
        return [(r["id"], root / r["path"]) for r in read_jsonl(manifest) if r.get("kept")]
    return [(safe_key(p.relative_to(root)), p) for p in sorted(root.rglob("*.wav"))]


def _transcribe_job(job: tuple[str, str, TranscribeConfig]) -> dict[str, Any]:
    cid, path, cfg = job
    rec: dict[str, Any] = {"id": cid, "path": path, "backend": cfg.backend}
    try:
        wav16, _ = load_audio(path, ASR_SR)
        result = get_backend(cfg).transcribe(wav16)
    except DataError as e:
        return {
            **rec,
            "text": "",
            "normalized": "",
            "confidence": 0.0,
            "error": Reason.UNREADABLE.value,
            "detail": str(e)[:200],
        }
    rec.update(
        text=result.text,
        normalized=english_cleaners(result.text),
        confidence=round(result.confidence, 4),
        duration=round(len(wav16) / ASR_SR, 3),
    )
    return rec


def _relative(path: Path, root: Path) -> str:
    """Clip paths are stored relative to the clips dir (movable), absolute when outside it."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


@dataclass(frozen=True)
class TranscribeSummary:
    out: Path
    clips: int
    new: int  # transcribed in this run (the rest were done before)
    low_confidence: int
    threshold: float


def transcribe(
    clips_dir: str | Path,
    out_path: str | Path | None = None,
    cfg: TranscribeConfig | None = None,
    workers: int = 1,
    progress: bool = False,
) -> TranscribeSummary:
    """Transcribe every clip into ``transcripts.jsonl`` (default: inside ``clips_dir``); resumable:
    results are appended as they arrive, and a re-run only does clips that are new or changed."""
    cfg = cfg or TranscribeConfig()
    root = Path(clips_dir)
    out = Path(out_path) if out_path else root / "transcripts.jsonl"
    clips = list_clips(root)
    done = {r["id"]: r for r in read_jsonl(out) if r.get("backend") == cfg.backend}
    todo = []
    fingerprints = {cid: file_fingerprint(path) if path.is_file() else "missing" for cid, path in clips}
    for cid, path in clips:
        if done.get(cid, {}).get("fingerprint") != fingerprints[cid]:
            todo.append((cid, str(path), cfg))
    rel = {cid: _relative(path, root) for cid, path in clips}
    if todo:
        get_backend(cfg)  # fail fast (bad model dir, missing package) before any worker starts
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", encoding="utf-8") as f:
        for _, rec in parallel_map(
            _transcribe_job, todo, workers, f"transcribing {len(todo)} clips", progress
        ):
            rec.update(fingerprint=fingerprints[rec["id"]], path=rel[rec["id"]])
            done[rec["id"]] = rec
            f.write(dumps(rec) + "\n")
            f.flush()
    final = []
    for cid, _ in clips:  # one record per current clip, flags under the current threshold
        rec = dict(done[cid])
        rec["low_confidence"] = bool(rec.get("error") or rec["confidence"] < cfg.threshold)
        final.append(rec)
    write_jsonl(out, final)
    low = sum(r["low_confidence"] for r in final)
    logger.info(
        "transcribed %d clips (%d new) with %s: %d low-confidence (< %.2f)",
        len(final),
        len(todo),
        cfg.backend,
        low,
        cfg.threshold,
    )
    return TranscribeSummary(out, len(final), len(todo), low, cfg.threshold)
