"""Bad input never kills a batch: every file is converted or skipped with a reason; re-runs skip
finished work."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf
import soxr

from tests.integration.data.data_helpers import SR, make_long_recording
from ttsops.data.manifest import read_jsonl
from ttsops.data.smart_segmenter import segment

SENTENCES = ["The old man found a green bottle near the river.", "Please close the window before you leave.",
             "My sister painted the wooden door.", "Nobody expected the meeting to end so early."]  # fmt: skip


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory, synth_cache):
    raw = tmp_path_factory.mktemp("raw")
    make_long_recording(raw / "good.wav", SENTENCES, synth_cache, seed=1, snr_db=40.0)
    wav, _ = sf.read(raw / "good.wav", dtype="float32")
    stereo48 = soxr.resample(wav, SR, 48000)
    sf.write(raw / "stereo48k.wav", np.stack([stereo48, 0.5 * stereo48], axis=1), 48000, subtype="PCM_24")
    loud = wav / np.abs(wav).max() * 0.95  # 8-bit keeps ~50 dB below full scale: use the range
    sf.write(raw / "u8.wav", soxr.resample(loud, SR, 16000), 16000, subtype="PCM_U8")
    sf.write(raw / "take.flac", wav, SR)
    sf.write(raw / "take.ogg", wav, SR, format="OGG", subtype="VORBIS")
    sf.write(raw / "take.mp3", soxr.resample(wav, SR, 44100), 44100, format="MP3", subtype="MPEG_LAYER_III")
    (raw / "sub").mkdir()
    sf.write(raw / "sub" / "good.wav", wav, SR)  # same stem in a sub directory: its own key
    (raw / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + os.urandom(3000))
    (raw / "notes.txt").write_text("not audio at all\n")
    (raw / "zero.wav").write_bytes(b"")
    sf.write(raw / "header_only.wav", np.zeros(0, np.float32), SR)
    sf.write(raw / "silence.wav", np.zeros(3 * SR, np.float32), SR)
    sf.write(raw / "hiss.wav", np.random.default_rng(0).normal(0, 0.05, 3 * SR).astype(np.float32), SR)
    sf.write(raw / "clipped.wav", np.clip(wav * 8, -1, 1), SR)
    sf.write(raw / "quiet.wav", wav * 10 ** (-40 / 20), SR, subtype="FLOAT")
    make_long_recording(raw / "noisy.wav", SENTENCES[:2], synth_cache, seed=2, snr_db=8.0)
    sf.write(raw / "cut_off.wav", wav[int(1.2 * SR) :], SR)  # starts mid-utterance
    return raw


def _by_source(records):
    out: dict[str, list[dict]] = {}
    for r in records:
        out.setdefault(r["source"], []).append(r)
    return out


def test_every_file_is_converted_or_skipped_with_a_reason(raw_dir, tmp_path):
    out = tmp_path / "seg"
    summary = segment([raw_dir], out, workers=2)
    by = _by_source(read_jsonl(out / "segments.jsonl"))
    assert summary.sources == len(by) == 17
    for name in ["good.wav", "stereo48k.wav", "u8.wav", "take.flac", "take.ogg", "take.mp3", "sub/good.wav"]:
        kept = [r for r in by[name] if r["kept"]]
        if name == "u8.wav":  # 8-bit quantisation noise (~-50 dBFS) puts the quietest utterance near the
            assert len(kept) >= 3 and {r["reason"] for r in by[name]} <= {None, "too_noisy"}  # SNR gate
        else:
            assert len(kept) == 4, (name, by[name])
        for r in kept:
            info = sf.info(str(out / r["path"]))
            assert (info.samplerate, info.channels, info.subtype) == (22050, 1, "PCM_16")
    reasons = {name: {r["reason"] for r in recs} for name, recs in by.items()}
    assert reasons["corrupt.wav"] == {"unreadable"} and reasons["notes.txt"] == {"unreadable"}
    assert reasons["zero.wav"] == {"empty"} and reasons["header_only.wav"] == {"empty"}
    assert reasons["silence.wav"] == {"no_speech"} and reasons["hiss.wav"] == {"no_speech"}
    assert reasons["clipped.wav"] == {"clipped"}
    assert reasons["quiet.wav"] == {"too_quiet"}
    assert reasons["noisy.wav"] == {"too_noisy"}
    assert [r["reason"] for r in by["cut_off.wav"]] == ["truncated", None, None, None]
    assert "unreadable" in summary.rejected and summary.kept >= 7 * 4 + 3 - 1
    ids = [r["id"] for recs in by.values() for r in recs]
    assert len(ids) == len(set(ids))


def test_a_rerun_skips_finished_files_and_redoes_changed_ones(raw_dir, tmp_path):
    import shutil

    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ["good.wav", "take.flac", "notes.txt"]:
        shutil.copy(raw_dir / name, raw / name)
    out = tmp_path / "seg"
    first = segment([raw], out)
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "clips").glob("*.wav")}
    manifest = (out / "segments.jsonl").read_bytes()
    again = segment([raw], out)
    assert (again.skipped, again.kept) == (3, first.kept)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "clips").glob("*.wav")} == stamps
    assert (out / "segments.jsonl").read_bytes() == manifest
    (out / "clips" / "take_0002.wav").unlink()  # a lost clip: that source is redone
    shutil.copy(raw_dir / "noisy.wav", raw / "good.wav")  # changed content: redone
    third = segment([raw], out)
    assert third.skipped == 1 and (out / "clips" / "take_0002.wav").is_file()
    assert not list((out / "clips").glob("good_*.wav"))  # the old clips of a changed file are gone
