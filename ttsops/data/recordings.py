"""Long "raw recordings" made from the demo corpus's utterances, with their ground truth, and the
quality of an ASR pass measured against it: what ``ttsops demo`` feeds the data plane, and how it
scores the segmenter's and the transcriber's output.

The recordings are flite utterances joined by random pauses, with white noise a set SNR below the
speech; the ground truth says which sentence lies where (seconds) in which file.
"""

from __future__ import annotations

import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ttsops.audio.io import load_audio, save_wav
from ttsops.data.corpus import generate_sentences, synth_utterance
from ttsops.metrics.intelligibility import word_error_rate


def synth_raw_recordings(out_dir: Path, *, n_files: int, utterances_per_file: int, seed: int, voice: str,
                         pause_s: tuple[float, float], snr_db: float, sample_rate: int = 22050, workers: int = 2,
                         ) -> list[dict[str, Any]]:
    """``n_files`` long wavs of flite speech with pauses and noise; returns, per file, where each
    utterance lies (the ground truth the segmenter and the ASR are measured against)."""
    n = n_files * utterances_per_file
    texts = generate_sentences(n, seed=seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ttsops-demo-") as tmp:
        def one(i: int) -> np.ndarray:
            path = synth_utterance(texts[i], Path(tmp) / f"u{i}.wav", voice=voice, sample_rate=sample_rate)
            return load_audio(path, sample_rate)[0]

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            utts = list(pool.map(one, range(n)))
    rng = np.random.default_rng(seed)
    files = []
    for f in range(n_files):
        idx = range(f * utterances_per_file, (f + 1) * utterances_per_file)
        wav, spans = join_utterances([utts[i] for i in idx], rng, sample_rate, pause_s, snr_db)
        name = f"recording_{f:02d}.wav"
        save_wav(out_dir / name, wav, sample_rate)
        files.append({"file": name, "seconds": round(len(wav) / sample_rate, 2),
                      "utterances": [{"text": texts[i], "start": s, "end": e}
                                     for i, (s, e) in zip(idx, spans, strict=True)]})
    return files


def join_utterances(utts: list[np.ndarray], rng: np.random.Generator, sr: int,
                    pause_s: tuple[float, float], snr_db: float) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Pure: utterances (each at a random gain of +-2 dB) separated by random pauses, white noise
    at ``snr_db`` below the mean speech power; returns the wav and each utterance's (start, end) s."""
    parts, spans, t = [np.zeros(int(0.5 * sr), np.float32)], [], 0.5
    for u in utts:
        u = u * 10 ** (rng.uniform(-2, 2) / 20)
        spans.append((round(t, 3), round(t + len(u) / sr, 3)))
        pause = np.zeros(int(rng.uniform(*pause_s) * sr), np.float32)
        parts += [u.astype(np.float32), pause]
        t += (len(u) + len(pause)) / sr
    wav = np.concatenate(parts)
    speech = np.concatenate(utts)
    power = float(np.mean(speech[np.abs(speech) > 1e-4] ** 2)) if speech.size else 1e-4
    wav = wav + rng.normal(0, np.sqrt(power / 10 ** (snr_db / 10)), len(wav)).astype(np.float32)
    peak = float(np.max(np.abs(wav))) or 1.0
    return (wav * min(1.0, 0.89 / peak)).astype(np.float32), spans


def asr_quality(manifest_rows: list[dict[str, Any]], truth: list[dict[str, Any]]) -> dict[str, Any]:
    """WER of the dataset's transcripts against the spoken text (clips matched to utterances by
    overlap in the source); clips that span several utterances are counted too."""
    by_file = {f["file"]: f["utterances"] for f in truth}
    refs, hyps, multi = [], [], 0
    for row in manifest_rows:
        utts = [u for u in by_file.get(str(row.get("source")), [])
                if row.get("start") is not None and u["end"] > row["start"] and u["start"] < row["end"]]
        if not utts:
            continue
        multi += len(utts) > 1
        refs.append(" ".join(u["text"] for u in utts))
        hyps.append(row.get("normalized") or row.get("transcript") or "")
    wer = word_error_rate(refs, hyps)
    return {"asr_wer": round(wer, 4), "clips_matched": len(refs), "clips_with_several_utterances": multi}
