"""Data-plane speed on one core: segmentation and transcription as x real time, plus ASR WER.

    .venv/bin/python benchmarks/data_plane.py [--minutes 5] [--snr-db 40] [--json out.json]

Makes long recordings from flite utterances (voices rms, slt, awb, kal16) joined with random
0.3-2 s pauses under white noise at ``--snr-db``, then times, in this process pinned to one core:

- ``segment`` (decode, resample, silero-vad, cut plan, quality gates, write clips): audio seconds
  of the recordings per second; also the VAD alone;
- ``transcribe`` with pocketsphinx (bundled model) over the kept clips: clip audio seconds per
  second; WER against the sentences that were spoken; and the five LibriVox clips of Debian's
  pocketsphinx-testdata (real speech) for speed and WER.

Each figure is given for wall time and for CPU time of this process: on a shared machine the CPU
figure is what one free core would do. Goals: segmentation >= 100x, transcription >= 5x.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ttsops.audio.io import load_audio, save_wav  # noqa: E402
from ttsops.data.corpus import generate_sentences, synth_utterance  # noqa: E402
from ttsops.data.manifest import read_jsonl  # noqa: E402
from ttsops.text.cleaners import english_cleaners  # noqa: E402

SR = 22050
VOICES = ["rms", "slt", "awb", "kal16"]
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")


def words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z' ]", " ", english_cleaners(text)).split())


def make_recordings(work: Path, minutes: float, snr_db: float, seed: int = 0) -> dict[str, list[str]]:
    """Long wavs under ``work/raw``; returns {file name: sentences in order}."""
    rng, nrng = random.Random(seed), np.random.default_rng(seed)
    sentences = iter(generate_sentences(4000, seed=31337))
    spoken: dict[str, list[str]] = {}
    per_file_s, total, k = 120.0, 0.0, 0
    while total < minutes * 60:
        parts, speech, said, t = [np.zeros(int(0.5 * SR), np.float32)], [], [], 0.5
        while t < per_file_s:
            text = next(sentences)
            tmp = work / "utt.wav"
            synth_utterance(text, tmp, voice=VOICES[len(said) % len(VOICES)], sample_rate=SR)
            utt = load_audio(tmp)[0]
            utt = utt / np.abs(utt).max() * 0.5
            gap = np.zeros(int(rng.uniform(0.3, 2.0) * SR), np.float32)
            parts += [utt, gap]
            speech.append(utt)
            said.append(text)
            t += (len(utt) + len(gap)) / SR
        wav = np.concatenate(parts)
        noise = nrng.standard_normal(len(wav)).astype(np.float32)
        power = np.mean(np.concatenate(speech) ** 2)
        wav += noise * np.float32(np.sqrt(power / 10 ** (snr_db / 10)))
        name = f"session{k:02d}.wav"
        save_wav(work / "raw" / name, wav, SR)
        spoken[name] = said
        total += len(wav) / SR
        k += 1
    return spoken


def timed(fn, *args, **kwargs):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - w0, time.process_time() - c0


def bench_segmentation(work: Path) -> dict[str, float]:
    from ttsops.data.smart_segmenter import SegmenterConfig, SileroVad, read_mono_16k, segment

    files = sorted((work / "raw").glob("*.wav"))
    audio_s = sum(load_audio(f)[0].size for f in files) / SR
    vad, load_wall, _ = timed(SileroVad)
    wav16 = [read_mono_16k(f)[0] for f in files]
    _, vad_wall, vad_cpu = timed(lambda: [vad.probs(w) for w in wav16])
    segment(files[:1], work / "warm", SegmenterConfig(), workers=1)  # imports, ONNX session, caches
    summary, wall, cpu = timed(segment, files, work / "seg", SegmenterConfig(), workers=1)
    return {"audio_s": round(audio_s, 1), "clips_kept": summary.kept, "rejected": summary.rejected,
            "model_load_s": round(load_wall, 3), "x_rt_wall": round(audio_s / wall, 1),
            "x_rt_cpu": round(audio_s / cpu, 1), "vad_x_rt_wall": round(audio_s / vad_wall, 1),
            "vad_x_rt_cpu": round(audio_s / vad_cpu, 1)}  # fmt: skip


def bench_transcription(work: Path, spoken: dict[str, list[str]]) -> dict[str, float]:
    import jiwer

    from ttsops.data.transcribe import TranscribeConfig, get_backend, transcribe, transcribe_clip

    backend, load_wall, _ = timed(get_backend, TranscribeConfig())
    summary, wall, cpu = timed(transcribe, work / "seg", workers=1)
    records = {r["id"]: r for r in read_jsonl(summary.out)}
    segs = read_jsonl(work / "seg" / "segments.jsonl")
    clip_s = sum(r["duration"] for r in records.values())
    refs, hyps = [], []
    for name, said in spoken.items():  # a kept clip holds one utterance when every pause was cut
        mine = [r for r in segs if r["source"] == name and "speech_start" in r]
        if len(mine) == len(said):
            pairs = [(s, records[r["id"]]["text"]) for s, r in zip(said, mine, strict=True) if r["kept"]]
            refs += [words(s) for s, _ in pairs]
            hyps += [words(h) or "<empty>" for _, h in pairs]
    out = {"clip_audio_s": round(clip_s, 1), "clips": summary.clips, "model_load_s": round(load_wall, 3),
           "x_rt_wall": round(clip_s / wall, 2), "x_rt_cpu": round(clip_s / cpu, 2),
           "flite_wer": round(jiwer.wer(refs, hyps), 4) if refs else None, "flite_wer_clips": len(refs),
           "low_confidence": summary.low_confidence}  # fmt: skip
    if (LIBRIVOX / "transcription").is_file():
        items = [
            re.match(r"<s> (.*) </s> \((.*)\)", ln.strip()) for ln in (LIBRIVOX / "transcription").open()
        ]
        items = [(LIBRIVOX / f"{m.group(2)}.wav", m.group(1)) for m in items if m]
        audio = sum(load_audio(p)[0].size / 16000 for p, _ in items)
        texts, lw, lc = timed(lambda: [transcribe_clip(p, backend).text for p, _ in items])
        out.update(
            librivox_audio_s=round(audio, 1),
            librivox_x_rt_wall=round(audio / lw, 2),
            librivox_x_rt_cpu=round(audio / lc, 2),
            librivox_wer=round(jiwer.wer([words(r) for _, r in items], [words(t) for t in texts]), 4),
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0, help="minutes of long recordings to make")
    ap.add_argument("--snr-db", type=float, default=40.0)
    ap.add_argument("--workdir", default=None, help="keep the material here (default: a temp dir)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    work = Path(args.workdir or tempfile.mkdtemp(prefix="ttsops-bench-data-"))
    try:
        print(
            f"making {args.minutes:g} min of long recordings at {args.snr_db:g} dB SNR in {work} ...",
            flush=True,
        )
        spoken = make_recordings(work, args.minutes, args.snr_db)
        seg = bench_segmentation(work)
        print(f"segmentation: {seg}", flush=True)
        asr = bench_transcription(work, spoken)
        print(f"transcription (pocketsphinx): {asr}", flush=True)
        print(
            f"\nsegmentation   x{seg['x_rt_wall']:>7} real time (wall), x{seg['x_rt_cpu']:>7} (CPU)   goal >= 100"
        )
        print(
            f"transcription  x{asr['x_rt_wall']:>7} real time (wall), x{asr['x_rt_cpu']:>7} (CPU)   goal >= 5"
        )
        if args.json:
            Path(args.json).write_text(json.dumps({"segmentation": seg, "transcription": asr}, indent=2))
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
