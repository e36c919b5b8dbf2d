"""Intelligibility: does an ASR understand what a model says?

The model speaks fixed, versioned held-out sentences (``heldout/in_domain.txt``: new combinations of
the demo corpus's templates; ``heldout/out_of_domain.txt``: the first two Harvard lists), the
bundled ASR (the data plane's backend and settings, ``ttsops.data.transcribe``) transcribes them,
and we report per list:

* ``wer`` / ``cer``: corpus word / character error rate after the same normalisation as the
  transcripts (lower case, punctuation dropped); 1.0 means nothing recognisable;
* ``speaking_rate_ratio``: total synthesised duration / total reference duration (a reference
  recording of the sentence when there is one, else the dataset's seconds per character times the
  sentence length); > 1 is too slow;
* ``stop_rate``: share of sentences whose free-running synthesis stopped on its own gate;
* ``ceiling_wer``: the **copy-synthesis ceiling**, the same vocoder fed the mels of the reference
  recordings: what a perfect acoustic model could score with this vocoder and this ASR.

Caveats: pocketsphinx is a weak ASR (WER 0.08-0.19 on the flite originals of these lists, 0.28 on
real LibriVox speech), so differences below ~0.05 on 20 sentences are noise, and the figure measures
what *this* ASR understands, not a listening test. A sentence of the training set must never be in
a held-out list: ``check_heldout`` refuses one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ttsops.errors import DataError

logger = logging.getLogger(__name__)

HELDOUT_SETS = ("in_domain", "out_of_domain")
ASR_SR = 16000


# --- the held-out lists ------------------------------------------------------------------------------
def load_heldout(name: str) -> tuple[str, ...]:
    """The shipped list ``name`` (``in_domain`` or ``out_of_domain``), comments dropped."""
    if name not in HELDOUT_SETS:
        raise DataError(f"unknown held-out list {name!r} (valid: {', '.join(HELDOUT_SETS)})")
    text = resources.files("ttsops.metrics").joinpath("heldout", f"{name}.txt").read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def normalise(text: str) -> str:
    """What two sentences are compared as: cleaned, lower case, letters and apostrophes only."""
    from ttsops.text.cleaners import english_cleaners

    return " ".join(_words(english_cleaners(text)).split())


def split_leaked(sentences: Iterable[str], training_texts: Iterable[str]) -> tuple[list[str], list[str]]:
    """(held out, leaked): the sentences the model was not / was trained on (after normalisation)."""
    seen = {normalise(t) for t in training_texts}
    kept: list[str] = []
    leaked: list[str] = []
    for s in sentences:
        (leaked if normalise(s) in seen else kept).append(s)
    return kept, leaked


def check_heldout(sentences: Iterable[str], training_texts: Iterable[str]) -> None:
    """Refuse a held-out sentence that the model was trained on (compared after normalisation)."""
    _, leaked = split_leaked(sentences, training_texts)
    if leaked:
        raise DataError(f"held-out sentence {leaked[0]!r} is in the training set "
                        f"({len(leaked)} such sentence{'s' if len(leaked) > 1 else ''}): it cannot measure "
                        "intelligibility")


# --- error rates -----------------------------------------------------------------------------------
def _words(s: str) -> str:
    return " ".join("".join(c if c.isalpha() or c in " '" else " " for c in s.lower()).split())


def word_error_rate(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus WER after lower-casing and dropping punctuation (NaN without references)."""
    import jiwer

    r, h = [_words(x) for x in refs], [_words(x) for x in hyps]
    return float(jiwer.wer(r, h)) if r and all(r) else float("nan")


def char_error_rate(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus CER over the same normalised text (spaces count as characters)."""
    import jiwer

    r, h = [_words(x) for x in refs], [_words(x) for x in hyps]
    return float(jiwer.cer(r, h)) if r and all(r) else float("nan")


# --- scoring ---------------------------------------------------------------------------------------
class Speaker(Protocol):
    """Text -> (waveform, sample rate, stopped on its own gate)."""

    def __call__(self, text: str) -> tuple[np.ndarray, int, bool]: ...


class Asr(Protocol):
    def __call__(self, wav: np.ndarray, sample_rate: int) -> str: ...


@dataclass(frozen=True)
class Utterance:
    text: str
    heard: str
    seconds: float
    expected_seconds: float
    stopped: bool


@dataclass(frozen=True)
class SetScore:
    name: str
    wer: float
    cer: float
    speaking_rate_ratio: float
    stop_rate: float
    ceiling_wer: float | None = None
    utterances: tuple[Utterance, ...] = field(default=(), repr=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pocketsphinx_asr() -> Asr:
    """The data plane's ASR (pocketsphinx, the data plane's settings) as ``(wav, sr) -> text``."""
    import soxr

    from ttsops.data.transcribe import TranscribeConfig, get_backend

    backend = get_backend(TranscribeConfig())

    def asr(wav: np.ndarray, sample_rate: int) -> str:
        wav16 = wav if sample_rate == ASR_SR else soxr.resample(wav, sample_rate, ASR_SR)
        return backend.transcribe(np.asarray(wav16, dtype=np.float32)).text

    return asr


def score_set(name: str, sentences: Sequence[str], speak: Speaker, asr: Asr,
              expected_seconds: Callable[[str], float],
              references: Mapping[str, tuple[np.ndarray, int]] | None = None,
              vocode_reference: Callable[[np.ndarray, int], np.ndarray] | None = None) -> SetScore:
    """Speak, transcribe and score one list. ``vocode_reference`` (reference wav -> copy-synthesised
    wav at the same rate) gives the ceiling where every sentence has a reference."""
    utts = []
    for text in sentences:
        wav, sr, stopped = speak(text)
        utts.append(Utterance(text, asr(wav, sr), len(wav) / sr, expected_seconds(text), stopped))
    refs, hyps = [u.text for u in utts], [u.heard for u in utts]
    ceiling = None
    if references is not None and vocode_reference is not None and all(t in references for t in sentences):
        heard = [asr(vocode_reference(*references[t]), references[t][1]) for t in sentences]
        ceiling = round(word_error_rate(sentences, heard), 4)
    total_expected = sum(u.expected_seconds for u in utts)
    return SetScore(
        name, round(word_error_rate(refs, hyps), 4), round(char_error_rate(refs, hyps), 4),
        round(sum(u.seconds for u in utts) / total_expected, 4) if total_expected > 0 else float("nan"),
        round(sum(u.stopped for u in utts) / max(1, len(utts)), 4), ceiling, tuple(utts),
    )


def flite_references(sentences: Iterable[str], cache_dir: Path, voice: str = "rms",
                     sample_rate: int = 22050) -> dict[str, tuple[np.ndarray, int]]:
    """Reference recordings of ``sentences`` by flite ``voice`` (the demo corpus's voice), cached."""
    import hashlib

    from ttsops.audio.io import load_audio
    from ttsops.data.corpus import synth_utterance

    out = {}
    for text in sentences:
        path = cache_dir / voice / f"{hashlib.sha1(text.encode()).hexdigest()[:16]}.wav"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            synth_utterance(text, path, voice=voice, sample_rate=sample_rate)
        out[text] = load_audio(path, sample_rate)
    return out


def summary_metrics(scores: Mapping[str, SetScore]) -> dict[str, float]:
    """The logged figures: ``asr_wer``/``asr_cer``/``speaking_rate_ratio`` of the in-domain list
    (the first list when there is none), and ``asr_wer_<list>`` for every list."""
    if not scores:
        return {}
    main = scores.get("in_domain") or next(iter(scores.values()))
    out = {"asr_wer": main.wer, "asr_cer": main.cer, "speaking_rate_ratio": main.speaking_rate_ratio,
           "stop_rate": main.stop_rate}
    for name, s in scores.items():
        out[f"asr_wer_{name}"] = s.wer
        if s.ceiling_wer is not None:
            out[f"asr_wer_ceiling_{name}"] = s.ceiling_wer
    return out


class Probe:
    """What train.py runs on its intelligibility cadence: the first ``n`` sentences of each shipped
    list minus any the model trains on, spoken free-running by a model, vocoded with Griffin-Lim and
    transcribed; expected durations from the training set's seconds per character. Loads the ASR once."""

    def __init__(self, training_texts: Sequence[str], seconds_per_char: float, n: int = 10,
                 asr: Asr | None = None) -> None:
        self.sets: dict[str, list[str]] = {}
        for name in HELDOUT_SETS:
            kept, leaked = split_leaked(load_heldout(name)[:n], training_texts)
            if leaked:
                logger.warning("intelligibility: %d sentence(s) of the %s list are in the training set and are "
                               "not scored: %s", len(leaked), name, "; ".join(leaked))
            if kept:
                self.sets[name] = kept
        self.seconds_per_char = seconds_per_char
        self.asr = asr or pocketsphinx_asr()

    def expected_seconds(self, text: str) -> float:
        return len(normalise(text)) * self.seconds_per_char

    def __call__(self, speak: Speaker) -> dict[str, SetScore]:
        return {name: score_set(name, sents, speak, self.asr, self.expected_seconds)
                for name, sents in self.sets.items()}
