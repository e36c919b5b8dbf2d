"""Dataset assembly: LJSpeech layout, manifest, deterministic split, report, idempotent rebuild."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ttsops.data.build import BuildConfig, build, dataset_report, split_ids
from ttsops.data.manifest import read_jsonl, write_jsonl
from ttsops.errors import ConfigError, DataError


def _tone(seconds: float, sr: int = 22050) -> np.ndarray:
    return (0.3 * np.sin(np.arange(int(seconds * sr)) * 2 * np.pi * 220 / sr)).astype(np.float32)


@pytest.fixture
def seg_dir(tmp_path: Path) -> Path:
    """Five clips as the segmenter and transcriber leave them, plus one segment rejection."""
    d = tmp_path / "seg"
    (d / "clips").mkdir(parents=True)
    texts = {"rec_0001": ("hello world", 0.6), "rec_0002": ("the old man found a map", 0.5),
             "rec_0003": ("mumble", 0.1), "rec_0004": ("", 0.0), "rec_0005": ("dr. smith paid $3", 0.7)}  # fmt: skip
    segs, trans = [], []
    for i, (cid, (text, conf)) in enumerate(texts.items()):
        path = d / "clips" / f"{cid}.wav"
        if cid == "rec_0005":  # stereo float at 16 kHz: must be converted, not copied
            sf.write(path, np.stack([_tone(1.5, 16000)] * 2, axis=1), 16000, subtype="FLOAT")
        else:
            sf.write(path, _tone(1.0 + i), 22050, subtype="PCM_16")
        segs.append({"id": cid, "source": "rec.wav", "start": float(i * 5), "end": float(i * 5 + 2), "kept": True,
                     "duration": 2.0, "path": f"clips/{cid}.wav"})  # fmt: skip
        trans.append({"id": cid, "path": f"clips/{cid}.wav", "text": text, "normalized": text.replace(".", ""),
                      "confidence": conf, "low_confidence": conf < 0.3, "backend": "pocketsphinx"})  # fmt: skip
    trans[-1]["normalized"] = "doctor smith paid three dollars"
    segs.append(
        {"id": "rec_0006", "source": "rec.wav", "kept": False, "reason": "too_noisy", "duration": 2.0}
    )
    write_jsonl(d / "segments.jsonl", segs)
    write_jsonl(d / "transcripts.jsonl", trans)
    return d


def test_build_writes_the_ljspeech_layout_manifest_and_report(seg_dir, tmp_path):
    out = tmp_path / "ds"
    summary = build(seg_dir, out, cfg=BuildConfig(val_fraction=0.4))
    assert summary.clips == 3 and summary.train + summary.val == 3 and summary.val == 1
    assert summary.rejected == {"empty_transcript": 1, "low_confidence": 1, "too_noisy": 1}
    lines = (out / "metadata.csv").read_text().splitlines()
    assert lines[0] == "rec_0001|hello world|hello world"
    assert lines[2] == "rec_0005|dr. smith paid $3|doctor smith paid three dollars"
    manifest = read_jsonl(out / "manifest.jsonl")
    assert [m["id"] for m in manifest] == ["rec_0001", "rec_0002", "rec_0005"]
    for m in manifest:
        data = (out / m["path"]).read_bytes()
        assert m["sha256"] == hashlib.sha256(data).hexdigest()
        info = sf.info(str(out / m["path"]))
        assert (info.samplerate, info.channels, info.subtype) == (22050, 1, "PCM_16")
        assert m["duration"] == pytest.approx(info.duration, abs=1e-3)
        assert m["source"] == "rec.wav" and m["end"] - m["start"] == 2.0
    assert (out / "wavs" / "rec_0001.wav").read_bytes() == (seg_dir / "clips" / "rec_0001.wav").read_bytes()
    assert manifest[2]["duration"] == pytest.approx(1.5, abs=1e-3)  # resampled from 16 kHz
    val = (out / "filelists" / "val.txt").read_text().splitlines()
    assert len(val) == 1 and val[0].startswith("wavs/") and "|" in val[0]
    report = json.loads((out / "report.json").read_text())
    assert report["clips"] == 3 and report["total_seconds"] == pytest.approx(1.0 + 2.0 + 1.5, abs=0.01)
    assert report["rejected"]["low_confidence"] == 1 and sum(report["histogram"]["counts"]) == 3
    assert report["speaking_rate"]["words_per_s"]["max"] == pytest.approx(5 / 1.5, abs=0.01)  # rec_0005
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rebuild_is_idempotent_and_drops_stale_wavs(seg_dir, tmp_path):
    out = tmp_path / "ds"
    build(seg_dir, out)
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "wavs").glob("*.wav")}
    manifest = (out / "manifest.jsonl").read_bytes()
    build(seg_dir, out)
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "wavs").glob("*.wav")}
    assert after == before and (out / "manifest.jsonl").read_bytes() == manifest
    build(seg_dir, out, cfg=BuildConfig(include_low_confidence=True))
    assert (out / "wavs" / "rec_0003.wav").is_file()
    build(seg_dir, out)
    assert not (out / "wavs" / "rec_0003.wav").exists()


def test_missing_clips_and_missing_transcripts_are_reported(seg_dir, tmp_path):
    (seg_dir / "clips" / "rec_0002.wav").unlink()
    assert build(seg_dir, tmp_path / "ds").rejected["missing_clip"] == 1
    (seg_dir / "transcripts.jsonl").unlink()
    with pytest.raises(DataError, match="transcribe"):
        build(seg_dir, tmp_path / "ds")


def test_split_is_deterministic_order_free_and_stable_under_growth():
    ids = [f"clip_{i:04d}" for i in range(200)]
    a = split_ids(ids, 0.1)
    assert a == split_ids(list(reversed(ids)), 0.1)
    assert sum(v == "val" for v in a.values()) == 20
    grown = split_ids(ids + [f"new_{i}" for i in range(20)], 0.1)
    moved = [i for i in ids if a[i] != grown[i]]
    assert len(moved) <= 3  # only clips at the margin of the cut can move
    assert split_ids(ids, 0.1, seed="other") != a
    assert split_ids(["a", "b"], 0.01) in ({"a": "val", "b": "train"}, {"a": "train", "b": "val"})
    assert split_ids(["a"], 0.5) == {"a": "train"}
    assert set(split_ids(ids, 0.0).values()) == {"train"}


def test_split_matches_the_training_loader():
    from ttsops.data.dataset import Utterance, split

    ids = [f"x{i}" for i in range(50)]
    utts = [Utterance(i, "t", Path(f"{i}.wav"), "", 1.0) for i in ids]
    _, val = split(utts, 0.1)
    assert {u.id for u in val} == {i for i, s in split_ids(ids, 0.1).items() if s == "val"}


def test_report_of_an_empty_dataset_and_config_validation():
    report = dataset_report([], {"too_noisy": 2})
    assert report["clips"] == 0 and report["rejected_total"] == 2
    with pytest.raises(ConfigError, match="val_fraction"):
        BuildConfig(val_fraction=1.5)


def test_report_carries_the_seconds_of_speech_lost_per_reason_and_the_snr_distribution():
    def seg(snr, kept, reason=None, speech=(0.0, 2.0)):
        return {"snr_db": snr, "kept": kept, "reason": reason, "speech_start": speech[0], "speech_end": speech[1]}

    segments = [seg(31.0, True), seg(27.4, True), seg(22.0, False, "too_noisy", (5.0, 8.5)),
                seg(18.9, False, "too_noisy", (9.0, 10.0)), seg(40.0, False, "too_long", (0.0, 12.25)),
                {"kept": False, "reason": "unreadable"}]  # fmt: skip
    report = dataset_report([], {"too_noisy": 2}, segments=segments)
    assert report["rejected_speech_s"] == {"too_long": 12.25, "too_noisy": 4.5, "unreadable": 0.0}
    snr = report["snr_db"]
    assert (snr["clips"], snr["min"], snr["median"], snr["max"]) == (5, 18.9, 27.4, 40.0)
    assert snr["edges_db"][0] == 17.5 and snr["edges_db"][-1] == 42.5  # 2.5 dB bins past the max
    assert sum(snr["kept"]) == 2 and sum(snr["rejected"]) == 3
    bin_of = lambda db: int((db - 17.5) // 2.5)  # noqa: E731
    assert snr["kept"][bin_of(31.0)] == 1 and snr["rejected"][bin_of(22.0)] == 1
    assert snr["rejected"][-1] == 1  # 40 dB: the last bin, [40, 42.5)
    assert dataset_report([], {})["snr_db"] == {"clips": 0} and dataset_report([], {})["rejected_speech_s"] == {}
