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
    from ttsops.data.smart_segmenter import SegmenterConfig, read_mono_16k, segment
    from ttsops.data.vad import SileroVad

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


def clip_references(work: Path, spoken: dict[str, list[str]]) -> list[tuple[Path, str]]:
    """(kept clip, the sentence spoken in it) for recordings where every pause became a cut."""
    segs = read_jsonl(work / "seg" / "segments.jsonl")
    out = []
    for name, said in spoken.items():
        mine = [r for r in segs if r["source"] == name and "speech_start" in r]
        if len(mine) == len(said):
            out += [(work / "seg" / r["path"], s) for s, r in zip(said, mine, strict=True) if r["kept"]]
    return out


def librivox_items() -> list[tuple[Path, str]]:
    if not (LIBRIVOX / "transcription").is_file():
        return []
    found = [re.match(r"<s> (.*) </s> \((.*)\)", ln.strip()) for ln in (LIBRIVOX / "transcription").open()]
    return [(LIBRIVOX / f"{m.group(2)}.wav", m.group(1)) for m in found if m]


def asr_run(items: list[tuple[Path, str]], backend) -> dict[str, float]:
    """x real time (wall, CPU) and WER of ``backend`` over (clip, reference) pairs."""
    import jiwer

    from ttsops.data.transcribe import transcribe_clip

    audio = sum(sf_frames(p) for p, _ in items)
    texts, wall, cpu = timed(lambda: [transcribe_clip(p, backend).text for p, _ in items])
    wer = jiwer.wer([words(r) for _, r in items], [words(t) or "<empty>" for t in texts])
    return {"audio_s": round(audio, 1), "x_rt_wall": round(audio / wall, 2), "x_rt_cpu": round(audio / cpu, 2),
            "wer": round(wer, 4), "clips": len(items)}  # fmt: skip


def sf_frames(path: Path) -> float:
    import soundfile as sf

    return sf.info(str(path)).duration


def bench_transcription(work: Path, spoken: dict[str, list[str]]) -> dict[str, object]:
    """The batch step as users run it (``transcribe``, one worker), then WER per set."""
    from ttsops.data.transcribe import TranscribeConfig, get_backend, transcribe

    backend, load_wall, _ = timed(get_backend, TranscribeConfig())
    summary, wall, cpu = timed(transcribe, work / "seg", workers=1)
    clip_s = sum(r["duration"] for r in read_jsonl(summary.out))
    out: dict[str, object] = {
        "clip_audio_s": round(clip_s, 1), "clips": summary.clips, "low_confidence": summary.low_confidence,
        "model_load_s": round(load_wall, 3), "x_rt_wall": round(clip_s / wall, 2), "x_rt_cpu": round(clip_s / cpu, 2),
        "flite_clips": asr_run(clip_references(work, spoken), backend),
    }  # fmt: skip
    if librivox_items():
        out["librivox"] = asr_run(librivox_items(), backend)
    return out


def bench_asr_settings(work: Path, spoken: dict[str, list[str]], n_clips: int = 40) -> dict[str, object]:
    """Side by side on the same clips: pocketsphinx's stock search settings vs ours."""
    from ttsops.data.transcribe import TranscribeConfig, get_backend

    sets = {"flite_clips": clip_references(work, spoken)[:n_clips], "librivox": librivox_items()}
    configs = {"stock (fwdflat on, maxhmmpf 30000)": TranscribeConfig(fwdflat=True, maxhmmpf=30000),
               "ttsops (fwdflat off, maxhmmpf 5000)": TranscribeConfig()}  # fmt: skip
    return {
        name: {k: asr_run(v, get_backend(cfg)) for k, v in sets.items() if v} for name, cfg in configs.items()
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0, help="minutes of long recordings to make")
    ap.add_argument("--snr-db", type=float, default=40.0)
    ap.add_argument("--workdir", default=None, help="keep the material here (default: a temp dir)")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--asr-baseline", action="store_true", help="also time pocketsphinx's stock settings")
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
        results = {"segmentation": seg, "transcription": asr}
        if args.asr_baseline:
            results["asr_settings"] = bench_asr_settings(work, spoken)
            print(f"pocketsphinx settings, same clips: {results['asr_settings']}", flush=True)
        print(
            f"\nsegmentation   x{seg['x_rt_wall']:>7} real time (wall), x{seg['x_rt_cpu']:>7} (CPU)   goal >= 100"
        )
        print(
            f"transcription  x{asr['x_rt_wall']:>7} real time (wall), x{asr['x_rt_cpu']:>7} (CPU)   goal >= 5"
        )
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
