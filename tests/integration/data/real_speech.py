"""Long recordings of real read speech with known word timings, built from the LibriVox clips in
Debian's ``pocketsphinx-testdata`` (five sentences of "Sense and Sensibility", 16 kHz; LibriVox
recordings are in the public domain, the package is BSD-licensed).

Each clip is forced-aligned to its transcript with pocketsphinx (the bundled US-English model):
its word intervals are the truth a clip edge is checked against (an edge inside a word cuts it),
and its first and last word edges are the utterance edges boundaries are scored against.
Utterances are joined with their own recorded silence (room tone and all), so pauses sound like the
recording: a short breath keeps part of the trailing silence of one clip and part of the leading
silence of the next; longer pauses are padded with room tone cut from the clips' silences.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
SR = 16000


@dataclass(frozen=True)
class Utterance:
    name: str
    text: str
    wav: np.ndarray  # the whole clip, float32
    words: tuple[tuple[str, float, float], ...]  # (word, start s, end s) in the clip

    @property
    def speech(self) -> tuple[float, float]:
        return self.words[0][1], self.words[-1][2]


def librivox_transcripts() -> list[tuple[Path, str]]:
    if not (LIBRIVOX / "transcription").is_file():
        pytest.fail(f"{LIBRIVOX} is missing: run scripts/setup.sh (apt-get install pocketsphinx-testdata)")
    out = []
    for line in (LIBRIVOX / "transcription").read_text().splitlines():
        m = re.match(r"<s> (.*) </s> \((.*)\)", line.strip())
        if m:
            out.append((LIBRIVOX / f"{m.group(2)}.wav", m.group(1)))
    return out


@functools.cache
def aligned_utterances() -> tuple[Utterance, ...]:
    """The LibriVox clips with word timings from pocketsphinx forced alignment."""
    from pocketsphinx import Decoder

    # a grammar of the transcript, not set_align_text: with silprob 1.0 the grammar search puts
    # <sil> in the pauses between words ("rather <sil> cold") where the aligner gives them to a word
    decoder = Decoder(loglevel="FATAL", silprob=1.0)
    out = []
    # one clip ends in its last word's tail: with no silence after it, the aligner stretches that word
    # to the end of the file; 0.3 s of quiet hiss on both sides gives it somewhere to put <sil>
    pad = (np.random.default_rng(0).normal(0, 0.002, int(0.3 * SR)) * 32768).astype(np.int16)
    for path, text in librivox_transcripts():
        pcm, sr = sf.read(path, dtype="int16")
        assert sr == SR, (path, sr)
        decoder.add_jsgf_string("transcript", f"#JSGF V1.0;\ngrammar t;\npublic <s> = {text};\n")
        decoder.activate_search("transcript")
        decoder.start_utt()
        decoder.process_raw(np.concatenate([pad, pcm, pad]).tobytes(), full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        assert hyp is not None and hyp.hypstr == text, (path, hyp and hyp.hypstr)
        clip_s = len(pcm) / SR
        words = tuple(
            (re.sub(r"\(\d+\)$", "", s.word), round(max(s.start_frame / 100 - 0.3, 0.0), 3),
             round(min((s.end_frame + 1) / 100 - 0.3, clip_s), 3))
            for s in decoder.seg()
            if not s.word.startswith(("<", "["))
        )  # fmt: skip
        wav = (pcm / 32768).astype(np.float32)
        out.append(Utterance(path.stem, text, wav, sounding(words, wav)))
    return tuple(out)


def _energy_db(wav: np.ndarray) -> np.ndarray:
    n = len(wav) // 160
    return 10 * np.log10(np.mean(wav[: n * 160].reshape(n, 160).astype(np.float64) ** 2, axis=1) + 1e-12)


def sounding(words: tuple[tuple[str, float, float], ...], wav: np.ndarray, min_s: float = 0.03
             ) -> tuple[tuple[str, float, float], ...]:  # fmt: skip
    """Each word's interval shrunk from both ends to its first and last 10 ms frame above the clip's
    silence (95th percentile of the frames outside the words, + 3 dB). The aligner has no pause
    between words and hands a pause to a neighbouring word ("he was not ... an": the unreleased /t/
    of "not" and 170 ms of room tone are all "not"); an edge there cuts no sound of the word.
    Silent stretches *inside* a word (a stop closure before its release) stay inside it."""
    db = _energy_db(wav)
    outside = np.ones(len(db), bool)
    for _, a, b in words:
        outside[int(a * 100) : int(np.ceil(b * 100))] = False
    loud = db > np.percentile(db[outside], 95) + 3.0
    out = []
    for w, a, b in words:
        i, j = int(round(a * 100)), min(int(round(b * 100)), len(db))
        idx = np.flatnonzero(loud[i:j])
        s, e = (i + idx[0], i + idx[-1] + 1) if len(idx) else (i, j)
        if (e - s) / 100 < min_s:
            s, e = i, j
        out.append((w, round(float(s) / 100, 3), round(float(e) / 100, 3)))
    return tuple(out)


@dataclass
class RealTruth:
    utterances: list[tuple[float, float]] = field(default_factory=list)  # first to last word
    words: list[tuple[float, float]] = field(default_factory=list)  # their sounding parts
    texts: list[str] = field(default_factory=list)

    @property
    def speech_s(self) -> float:
        return sum(b - a for a, b in self.utterances)


def room_tone(utts: tuple[Utterance, ...], seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Background cut from the clips' silences: random 40 ms pieces overlap-added with Hann windows."""
    pool = []
    for u in utts:
        a, b = u.speech
        pool += [u.wav[: max(int((a - 0.03) * SR), 0)], u.wav[int((b + 0.05) * SR) :]]
    src = np.concatenate([p for p in pool if len(p)])
    win, hop = 640, 320
    n = int(seconds * SR)
    out = np.zeros(n + win, np.float32)
    w = np.hanning(win).astype(np.float32)
    for pos in range(0, n, hop):
        k = int(rng.integers(0, len(src) - win))
        out[pos : pos + win] += src[k : k + win] * w
    return out[:n]


def _fade(x: np.ndarray, n: int = 80) -> np.ndarray:
    x = x.copy()
    ramp = np.linspace(0, 1, min(n, len(x) // 2), dtype=np.float32)
    if len(ramp):
        x[: len(ramp)] *= ramp
        x[-len(ramp) :] *= ramp[::-1]
    return x


def make_real_recording(path: Path, order: list[int], pauses: list[float], seed: int = 0,
                        edge_s: float = 0.05) -> RealTruth:  # fmt: skip
    """Utterances ``order`` (indices into the LibriVox clips) with ``pauses[i]`` seconds of silence
    after the i-th (the last pause is the tail); ``edge_s`` of the first clip's own silence before it.

    A pause keeps up to half of itself from each neighbour's recorded silence, the rest is room tone."""
    utts = aligned_utterances()
    rng = np.random.default_rng(seed)
    assert len(pauses) == len(order)
    parts: list[np.ndarray] = []
    truth, t = RealTruth(), 0.0
    lead = edge_s
    for i, k in enumerate(order):
        u = utts[k]
        a, b = u.speech
        gap = pauses[i]
        tail = min(gap / 2 if i + 1 < len(order) else gap, len(u.wav) / SR - b)
        start = max(a - lead, 0.0)
        lead_kept = a - start
        piece = u.wav[int(round(start * SR)) : int(round((b + tail) * SR))]
        parts.append(_fade(piece))
        offset = t - start
        truth.utterances.append((round(t + lead_kept, 3), round(float(offset + b), 3)))
        truth.words += [(round(float(offset + ws), 3), round(float(offset + we), 3)) for _, ws, we in u.words]
        truth.texts.append(u.text)
        t += len(piece) / SR
        nxt_lead = utts[order[i + 1]].speech[0] if i + 1 < len(order) else 0.0
        lead = min(gap - tail, nxt_lead) if i + 1 < len(order) else 0.0
        fill = gap - tail - lead if i + 1 < len(order) else gap - tail
        if fill > 0.005:
            parts.append(_fade(room_tone(utts, fill, rng)))
            t += len(parts[-1]) / SR
    wav = np.concatenate(parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wav, SR, subtype="PCM_16")
    return truth


def pause_edges(truth: RealTruth, min_gap_s: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends): where speech starts after and ends before a pause of at least ``min_gap_s``
    (utterance edges and the pauses inside utterances): the edges a clip boundary should be near."""
    starts, ends = [truth.words[0][0]], []
    for (_, e), (s, _) in zip(truth.words, truth.words[1:], strict=False):
        if s - e >= min_gap_s:
            ends.append(e)
            starts.append(s)
    ends.append(truth.words[-1][1])
    return np.array(starts), np.array(ends)


@dataclass
class Score:
    speech_s: float
    kept_speech_s: float
    clips: int
    out_of_bounds: list[tuple[str, float]]
    word_cuts: list[tuple[str, float]]
    boundaries_within: float  # share of kept clips' speech starts/ends near a true edge

    @property
    def kept_share(self) -> float:
        return self.kept_speech_s / self.speech_s


def score(truth: RealTruth, records: list[dict], min_s: float, max_s: float, tol: float = 0.1) -> Score:
    """Score one recording's segment records against its truth (see the module docstring)."""
    kept = [r for r in records if r["kept"]]
    spans = [(r["start"], r["end"]) for r in kept]
    in_kept = sum(max(0.0, min(b, e) - max(a, s)) for a, b in truth.utterances for s, e in spans)
    cuts = sorted({(r["id"], edge) for r in kept for edge in (r["start"], r["end"])
                   for a, b in truth.words if a < edge < b})  # fmt: skip
    starts, ends = pause_edges(truth)
    hits = [np.min(np.abs(starts - r["speech_start"])) <= tol for r in kept]
    hits += [np.min(np.abs(ends - r["speech_end"])) <= tol for r in kept]
    return Score(
        speech_s=truth.speech_s,
        kept_speech_s=in_kept,
        clips=len(kept),
        out_of_bounds=[(r["id"], r["duration"]) for r in kept if not min_s <= r["duration"] <= max_s],
        word_cuts=cuts,
        boundaries_within=float(np.mean(hits)) if hits else 0.0,
    )
