"""Long "raw" recordings with known utterance boundaries, made from synthesised speech.

Each utterance is synthesised (flite or espeak-ng via ttsops.data.corpus), trimmed to its first
and last 10 ms frame within 40 dB of its loudest frame (that is where the utterance starts and
ends: the truth the segmenter is scored against), scaled to a random peak, and joined with random
pauses; noise is added over the whole recording at ``snr_db`` relative to the mean speech power.

Besides utterances the truth lists the *spoken stretches*: runs of frames within 40 dB of the
utterance's loudest frame, joined across gaps under 150 ms. flite puts real pauses of up to ~0.3 s
inside some sentences ("The weather was cold, | but ..."); a cut there splits an utterance but no
word, while a clip edge inside a spoken stretch would cut a word.
"""

from __future__ import annotations

import hashlib
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SR = 22050
VOICES = [("flite", "rms"), ("flite", "slt"), ("flite", "awb"), ("flite", "kal16"), ("espeak-ng", "en-us")]


def require(binary: str) -> None:
    if shutil.which(binary) is None:
        pytest.fail(f"{binary} is not installed: run scripts/setup.sh (apt-get install {binary})")


def synth(text: str, engine: str, voice: str, cache: Path, sr: int = SR) -> np.ndarray:
    from ttsops.audio.io import load_audio
    from ttsops.data.corpus import synth_utterance

    require(engine)
    key = hashlib.sha1(f"{engine}|{voice}|{sr}|{text}".encode()).hexdigest()[:16]
    path = cache / f"{key}.wav"
    if not path.is_file():
        synth_utterance(text, path, voice=voice, engine=engine, sample_rate=sr)
    return load_audio(path)[0]


def _active(wav: np.ndarray, sr: int = SR, top_db: float = 40.0) -> np.ndarray:
    hop = sr // 100
    n = len(wav) // hop
    db = 10 * np.log10(np.mean(wav[: n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1) + 1e-12)
    return db > db.max() - top_db


def trim(wav: np.ndarray, sr: int = SR, top_db: float = 40.0) -> np.ndarray:
    idx = np.flatnonzero(_active(wav, sr, top_db))
    return wav[idx[0] * (sr // 100) : (idx[-1] + 1) * (sr // 100)]


def spoken_stretches(wav: np.ndarray, offset: float, min_gap_s: float = 0.15) -> list[tuple[float, float]]:
    idx = np.flatnonzero(_active(wav))
    runs = [[idx[0], idx[0] + 1]]
    for i in idx[1:]:
        if (i - runs[-1][1]) / 100 < min_gap_s:
            runs[-1][1] = i + 1
        else:
            runs.append([i, i + 1])
    return [(offset + a / 100, offset + b / 100) for a, b in runs]


@dataclass
class Truth:
    utterances: list[tuple[float, float]] = field(default_factory=list)
    spoken: list[tuple[float, float]] = field(default_factory=list)


def make_noise(n: int, rng: np.random.Generator, colour: str) -> np.ndarray:
    white = rng.standard_normal(n)
    if colour == "white":
        return white
    brown = np.cumsum(white)
    brown -= np.convolve(brown, np.ones(441) / 441, mode="same")  # keep it zero-mean, no drift
    return brown / brown.std() + 0.5 * white  # "mixed": a rumbly floor plus hiss


def make_long_recording(
    path: Path, sentences: list[str], cache: Path, seed: int = 0, snr_db: float | None = 20.0,
    voices: list[tuple[str, str]] = VOICES, noise: str = "white", lead_s: float = 0.6,
) -> Truth:  # fmt: skip
    """Write the recording; return where its utterances and spoken stretches are."""
    rng = random.Random(seed)
    parts = [np.zeros(int(lead_s * SR), np.float32)]
    truth, t = Truth(), lead_s
    for i, text in enumerate(sentences):
        engine, voice = voices[i % len(voices)]
        utt = trim(synth(text, engine, voice, cache))
        utt = utt / np.abs(utt).max() * rng.uniform(0.3, 0.7)
        truth.utterances.append((t, t + len(utt) / SR))
        truth.spoken += spoken_stretches(utt, t)
        gap = np.zeros(int(rng.uniform(0.3, 2.0) * SR), np.float32)
        parts += [utt.astype(np.float32), gap]
        t += (len(utt) + len(gap)) / SR
    wav = np.concatenate(parts)
    if snr_db is not None:
        speech = np.concatenate([wav[int(a * SR) : int(b * SR)] for a, b in truth.utterances])
        n = make_noise(len(wav), np.random.default_rng(seed), noise)
        wav = wav + n * np.sqrt(np.mean(speech**2) / 10 ** (snr_db / 10) / np.mean(n**2))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.clip(wav, -1, 1).astype(np.float32), SR, subtype="PCM_16")
    return truth


def boundary_recall(utterances: list[tuple[float, float]], records: list[dict], tol: float = 0.1) -> float:
    """Share of utterance starts and ends within ``tol`` of a clip's speech start / end."""
    starts = np.array([r["speech_start"] for r in records if "speech_start" in r])
    ends = np.array([r["speech_end"] for r in records if "speech_end" in r])
    if not len(starts):
        return 0.0
    hits = sum(np.min(np.abs(starts - a)) <= tol for a, _ in utterances)
    hits += sum(np.min(np.abs(ends - b)) <= tol for _, b in utterances)
    return hits / (2 * len(utterances))


def edges_inside(intervals: list[tuple[float, float]], records: list[dict]) -> list[tuple[str, float]]:
    """Clip edges that fall strictly inside one of ``intervals``."""
    bad = []
    for r in records:
        if "speech_start" not in r:
            continue
        for edge in (r["start"], r["end"]):
            bad += [(r["id"], edge) for a, b in intervals if a < edge < b]
    return bad
