"""The built-in demo corpus: varied English sentences spoken by a local synthesiser.

``flite`` is the default engine because the bundled ASR (pocketsphinx) transcribes its voices well
(WER 0.16-0.27) while espeak-ng speech it barely understands (WER ~0.86); see DEPENDENCIES.md.
Everything is deterministic for a seed: the same sentences, voice choice and file names.

    ttsops data synth-corpus OUT_DIR --n 300 --seed 0 [--engine flite|espeak-ng] [--voice rms]
"""

from __future__ import annotations

import argparse
import logging
import random
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ttsops.audio.io import load_audio, save_wav
from ttsops.errors import DataError
from ttsops.infra.atomic import atomic_write_text

logger = logging.getLogger(__name__)

_SUBJECTS = [
    "the old man", "my sister", "a young doctor", "the small child", "our neighbour", "the captain",
    "a tired farmer", "the teacher", "her brother", "the quiet student", "a famous singer", "the baker",
    "the new manager", "his grandmother", "a lonely sailor", "the clever girl", "the driver",
    "my best friend", "the night nurse", "a busy lawyer",
]
_VERBS = [
    "found", "painted", "carried", "opened", "cleaned", "bought", "repaired", "watched", "packed",
    "borrowed", "remembered", "described", "noticed", "ordered", "visited", "measured", "wrapped",
    "delivered", "counted", "discovered",
]
_OBJECTS = [
    "a green bottle", "the wooden door", "three yellow flowers", "an old map", "the heavy box",
    "a letter from home", "the broken window", "two silver coins", "a warm blanket", "the kitchen table",
    "a bright red kite", "the morning paper", "a basket of apples", "the last train ticket",
    "a small brown dog", "the violin case", "a cup of tea", "the village church", "a pair of boots",
    "the blue notebook",
]
_PLACES = [
    "near the river", "before breakfast", "in the garden", "after the storm", "at the station",
    "by the harbour", "during the winter", "behind the school", "on a sunny morning", "under the bridge",
    "in the crowded market", "late last night", "at the top of the hill", "beside the lake",
    "in the empty hall", "on the way home",
]
_QUESTIONS = [
    "did you see", "would you like", "can we find", "should I bring", "why did they hide",
    "where did she put", "how many people saw", "who forgot",
]
_EXTRAS = [
    "The weather was cold, but everyone stayed outside.",
    "Please close the window before you leave the room.",
    "It took seven hours to reach the mountain village.",
    "Nobody expected the meeting to end so early.",
    "The children laughed when the puppy chased its tail.",
    "She whispered the answer so that nobody else could hear.",
    "Fresh bread and hot soup were waiting on the table.",
    "We should plant the seeds before the rain begins.",
    "The museum closes at five o'clock on Sundays.",
    "Thank you for the lovely gift and the kind letter.",
]


def generate_sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct, varied sentences (statements, questions, exclamations), deterministic."""
    rng = random.Random(seed)
    out: list[str] = []
    seen: set[str] = set()
    extras = list(_EXTRAS)
    rng.shuffle(extras)
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > n * 50:
            raise DataError(f"cannot generate {n} distinct sentences (got {len(out)})")
        kind = rng.random()
        s, v, o, p = (rng.choice(x) for x in (_SUBJECTS, _VERBS, _OBJECTS, _PLACES))
        if extras and kind < 0.05:
            sentence = extras.pop()
        elif kind < 0.2:
            sentence = f"{rng.choice(_QUESTIONS).capitalize()} {o} {p}?"
        elif kind < 0.3:
            sentence = f"{s.capitalize()} {v} {o}!"
        elif kind < 0.65:
            sentence = f"{s.capitalize()} {v} {o} {p}."
        else:
            sentence = f"{s.capitalize()} {v} {o}."
        if sentence not in seen:
            seen.add(sentence)
            out.append(sentence)
    return out


def synth_utterance(
    text: str, out_path: str | Path, voice: str = "rms", engine: str = "flite", sample_rate: int = 22050
) -> Path:
    """Speak ``text`` with flite or espeak-ng into a mono 16-bit wav at ``sample_rate``."""
    binary = {"flite": "flite", "espeak-ng": "espeak-ng"}.get(engine)
    if binary is None:
        raise DataError(f"unknown synthesis engine {engine!r} (valid: flite, espeak-ng)")
    if shutil.which(binary) is None:
        raise DataError(f"{binary} is not installed (apt-get install {binary})")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        if engine == "flite":
            cmd = [binary, "-voice", voice, "-t", text, "-o", str(raw)]
        else:
            cmd = [binary, "-v", voice, "-w", str(raw), text]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0 or not raw.exists():
            raise DataError(f"{binary} failed for {text!r}: {proc.stderr.strip()[:200]}")
        wav, _ = load_audio(raw, sample_rate)
    return save_wav(out_path, wav, sample_rate)


def synth_corpus(
    out_dir: str | Path,
    n: int = 300,
    seed: int = 0,
    engine: str = "flite",
    voice: str | None = None,
    sample_rate: int = 22050,
    workers: int = 2,
    progress: bool = True,
) -> Path:
    """Write an LJSpeech-layout dataset (``wavs/``, ``metadata.csv``). Re-running skips clips that
    exist; ``metadata.csv`` is written last and atomically, so a crash leaves no claimed clip."""
    out = Path(out_dir)
    (out / "wavs").mkdir(parents=True, exist_ok=True)
    voice = voice or ("rms" if engine == "flite" else "en-us")
    sentences = generate_sentences(n, seed)
    items = [(f"demo_{i:05d}", text) for i, text in enumerate(sentences)]

    def one(item: tuple[str, str]) -> None:
        path = out / "wavs" / f"{item[0]}.wav"
        if not path.exists():
            synth_utterance(item[1], path, voice=voice, engine=engine, sample_rate=sample_rate)

    from rich.progress import Progress

    with Progress(disable=not progress) as bar, ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        task = bar.add_task(f"synthesising {n} clips ({engine}/{voice})", total=len(items))
        for _ in pool.map(one, items):
            bar.advance(task)
    from ttsops.text.cleaners import english_cleaners

    lines = "".join(f"{i}|{t}|{english_cleaners(t)}\n" for i, t in items)
    atomic_write_text(out / "metadata.csv", lines)
    logger.info("demo corpus: %d clips in %s", len(items), out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="ttsops data synth-corpus", description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--engine", default="flite", choices=["flite", "espeak-ng"])
    ap.add_argument("--voice", default=None)
    ap.add_argument("--sample-rate", type=int, default=22050)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    synth_corpus(args.out_dir, args.n, args.seed, args.engine, args.voice, args.sample_rate, args.workers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
