"""Transcription plumbing: backend registry and errors, clip listing, resumable runs."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import soundfile as sf

from ttsops.data.manifest import read_jsonl, write_jsonl
from ttsops.data.transcribe import (
    BACKENDS,
    FasterWhisperBackend,
    TranscribeConfig,
    list_clips,
    transcribe,
)
from ttsops.errors import ConfigError, DataError


def _clip(path, seconds=0.6, freq=300.0, sr=22050):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.2 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr, subtype="PCM_16")
    return path


def test_config_validation_and_backend_defaults():
    assert set(BACKENDS) == {"pocketsphinx", "faster-whisper"}
    with pytest.raises(ConfigError, match="unknown ASR backend 'vosk'.*pocketsphinx"):
        TranscribeConfig(backend="vosk")
    with pytest.raises(ConfigError, match="min_confidence"):
        TranscribeConfig(min_confidence=2.0)
    assert TranscribeConfig().threshold == 0.3
    assert TranscribeConfig(backend="faster-whisper").threshold == 0.5
    assert TranscribeConfig(min_confidence=0.7).threshold == 0.7


def test_faster_whisper_needs_a_complete_local_model_dir(tmp_path):
    with pytest.raises(ConfigError, match="--model-dir"):
        FasterWhisperBackend(TranscribeConfig(backend="faster-whisper"))
    with pytest.raises(ConfigError, match="model.bin, tokenizer.json"):
        FasterWhisperBackend(TranscribeConfig(backend="faster-whisper", model_dir=str(tmp_path)))


@pytest.mark.skipif(
    importlib.util.find_spec("faster_whisper") is not None, reason="faster-whisper is installed"
)
def test_faster_whisper_missing_package_gives_an_install_hint(tmp_path):
    for name in ("model.bin", "tokenizer.json"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(ImportError, match="pip install faster-whisper"):
        FasterWhisperBackend(TranscribeConfig(backend="faster-whisper", model_dir=str(tmp_path)))


def test_list_clips_prefers_the_segments_manifest(tmp_path):
    _clip(tmp_path / "clips" / "a_0001.wav")
    _clip(tmp_path / "clips" / "a_0002.wav")
    _clip(tmp_path / "other" / "x y.wav")
    assert [c for c, _ in list_clips(tmp_path)] == ["clips__a_0001", "clips__a_0002", "other__x_y"]
    write_jsonl(tmp_path / "segments.jsonl", [
        {"id": "a_0001", "kept": True, "path": "clips/a_0001.wav"}, {"id": "a_0002", "kept": False},
    ])  # fmt: skip
    assert list_clips(tmp_path) == [("a_0001", tmp_path / "clips" / "a_0001.wav")]
    with pytest.raises(DataError, match="not found"):
        list_clips(tmp_path / "nope")


def test_transcribe_is_resumable_and_reflags_without_redoing_work(tmp_path):
    for i in range(3):
        _clip(tmp_path / f"c{i}.wav", freq=200.0 + 100 * i)
    (tmp_path / "broken.wav").write_bytes(b"RIFF nonsense")
    first = transcribe(tmp_path)
    assert (first.clips, first.new) == (4, 4)
    records = {r["id"]: r for r in read_jsonl(first.out)}
    assert records["broken"]["error"] == "unreadable" and records["broken"]["low_confidence"]
    assert all(r["path"] == f"{r['id']}.wav" for r in records.values())  # relative to the clips dir
    assert transcribe(tmp_path).new == 0
    _clip(tmp_path / "c1.wav", seconds=0.8)  # changed: redone
    again = transcribe(tmp_path, cfg=TranscribeConfig(min_confidence=0.0))
    assert again.new == 1 and again.threshold == 0.0
    flags = {r["id"]: r["low_confidence"] for r in read_jsonl(again.out)}
    assert flags["c0"] is False and flags["broken"] is True  # an unreadable clip stays flagged
