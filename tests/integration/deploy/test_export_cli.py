"""``ttsops export`` in-process on a tiny real checkpoint: both formats written and checked, and
``ttsops synthesize --model EXPORT_DIR`` speaking like the checkpoint it came from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.integration.serve.serve_helpers import make_tiny_checkpoint
from ttsops.cli import main as ttsops_main
from ttsops.model.export import MANIFEST


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "best_model.pt")


def _say(model: Path, out: Path, seed: str = "0") -> np.ndarray:
    assert ttsops_main(["synthesize", "Say it the same way.", "-o", str(out), "--model", str(model),
                        "--seed", seed, "--threads", "1"]) == 0
    wav, sr = sf.read(str(out), dtype="float32")
    assert sr == 22050
    return wav


def test_export_prints_its_check_and_the_exports_speak_like_the_checkpoint(checkpoint, tmp_path, capsys):
    out = tmp_path / "exported"
    texts = ["Hello there.", "A second, longer sentence for the check."]
    assert ttsops_main(["export", str(checkpoint), "-o", str(out), "--text", texts[0], "--text", texts[1]]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["torchscript", "onnx"]
    for line in lines:
        assert "max |log-mel difference|" in line and "over 2 texts" in line and "tolerance 1e-04): ok" in line
    for fmt in ("torchscript", "onnx"):
        check = json.loads((out / fmt / MANIFEST).read_text())["check"]
        assert check["ok"] and check["texts"] == texts and check["max_abs_diff"] <= 1e-4
    reference = _say(checkpoint, tmp_path / "ref.wav")
    assert (_say(out / "torchscript", tmp_path / "ts.wav") == reference).all()  # bit-identical mel
    onnx = _say(out / "onnx", tmp_path / "onnx.wav")
    # a 1e-7 mel difference, through 32 Griffin-Lim iterations and 16-bit PCM: a few steps of 1/32768
    assert onnx.shape == reference.shape and np.abs(onnx - reference).max() <= 1e-3
    other_seed = _say(out / "onnx", tmp_path / "seed1.wav", seed="1")
    assert np.abs(other_seed - reference).max() > 1e-2  # the comparison above can fail


def test_bad_input_is_one_line_and_exit_2(checkpoint, tmp_path, capsys):
    out = tmp_path / "x"
    assert ttsops_main(["export", str(tmp_path / "missing.pt"), "-o", str(out)]) == 2
    assert ttsops_main(["export", str(checkpoint), "-o", str(out), "--format", "onnx,tflite"]) == 2
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    assert ttsops_main(["export", str(garbage), "-o", str(out)]) == 2
    (out / "onnx").mkdir(parents=True)
    (out / "onnx" / MANIFEST).write_text("{}")
    assert ttsops_main(["export", str(out / "onnx"), "-o", str(tmp_path / "y")]) == 2
    assert ttsops_main(["synthesize", "hi", "-o", str(tmp_path / "a.wav"), "--model", str(out / "onnx")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ttsops: error:")]
    assert errors == [
        f"ttsops: error: model source {tmp_path / 'missing.pt'}: no such file or directory",
        "ttsops: error: --format 'onnx,tflite': unknown tflite (valid: torchscript, onnx)",
        errors[2],
        f"ttsops: error: {out / 'onnx'} is an export already: give the checkpoint it came from",
        f"ttsops: error: {out / 'onnx' / MANIFEST}: not a ttsops export (missing format, graphs, model_config, "
        "mel, mean_frame, prenet_layers, io)",
    ]
    assert errors[2].startswith(f"ttsops: error: cannot read checkpoint {garbage}")
