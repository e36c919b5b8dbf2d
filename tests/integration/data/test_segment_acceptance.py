"""Acceptance: long recordings of flite and espeak-ng utterances joined with random 0.3-2 s pauses
under noise at 20 dB SNR. The segmenter must find >= 95% of utterance boundaries within 100 ms
and never cut a word: no clip boundary inside an utterance, except in a real pause inside it
(flite pauses up to ~0.3 s at some commas; a cut there splits no word, see data_helpers)."""

from __future__ import annotations

import pytest
import soundfile as sf

from tests.integration.data.data_helpers import boundary_recall, edges_inside, make_long_recording
from ttsops.data.corpus import generate_sentences
from ttsops.data.manifest import read_jsonl
from ttsops.data.smart_segmenter import SegmenterConfig, segment


def _check(tmp_path, synth_cache, n_recordings, n_utts, noise="white", snr_db=20.0):
    raw = tmp_path / "raw"
    sentences = generate_sentences(n_recordings * n_utts, seed=4242)
    truths = {}
    for k in range(n_recordings):
        path = raw / f"rec{k}.wav"
        chunk = sentences[k * n_utts : (k + 1) * n_utts]
        truths[path.name] = make_long_recording(path, chunk, synth_cache, seed=k, snr_db=snr_db, noise=noise)
    out = tmp_path / "seg"
    summary = segment([raw], out, SegmenterConfig(min_snr_db=15.0), workers=1)
    records = read_jsonl(out / "segments.jsonl")
    for name, truth in truths.items():
        recs = [r for r in records if r["source"] == name]
        recall = boundary_recall(truth.utterances, recs)
        assert recall >= 0.95, f"{name}: only {recall:.1%} of boundaries within 100 ms"
        assert edges_inside(truth.spoken, recs) == [], "a clip boundary cuts a word"
        inside = edges_inside(truth.utterances, recs)
        assert len(inside) <= 0.05 * len(truth.utterances), inside  # only at pauses inside sentences
    assert summary.kept >= 0.9 * n_recordings * n_utts, summary
    for r in records:
        if r["kept"]:
            info = sf.info(str(out / r["path"]))
            assert (info.samplerate, info.channels, info.subtype) == (22050, 1, "PCM_16")
            assert 1.0 <= info.duration <= 10.0
    return out, summary


def test_segmenter_recovers_utterance_boundaries_at_20db_snr(tmp_path, synth_cache):
    out, _ = _check(tmp_path, synth_cache, n_recordings=2, n_utts=10)
    # the default gate (25 dB estimated SNR) keeps most 20 dB material out (ASR and TTS both suffer);
    # the louder utterances (peaks vary 0.3-0.7 around the recording's mean) are a few dB better
    strict = segment([tmp_path / "raw"], tmp_path / "strict", workers=1)
    assert set(strict.rejected) == {"too_noisy"} and strict.rejected["too_noisy"] >= 0.8 * 20


@pytest.mark.slow
@pytest.mark.parametrize("noise", ["white", "mixed"])
def test_segmenter_boundaries_on_more_material(tmp_path, synth_cache, noise):
    _check(tmp_path, synth_cache, n_recordings=3, n_utts=40, noise=noise)
