"""The inference path as TorchScript and ONNX graphs (ttsops/model/export.py), run by the loop the
PyTorch model runs (ttsops/model/exported.py): the same mel within ``ttsops export``'s tolerance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers import TINY
from ttsops.deploy.cli import DEFAULT_TOLERANCE, check_export
from ttsops.errors import CheckpointError, ConfigError
from ttsops.model.config import ModelConfig, mel_config
from ttsops.model.export import MANIFEST, export_model
from ttsops.model.inference import Synthesizer
from ttsops.model.tacotron2 import Tacotron2
from ttsops.train.hparams import HParams

# longer and shorter than the traced example (7 tokens): the graphs must not have kept its shapes
TEXTS = ["Hi there.", "A sentence with quite a few more tokens than the traced example had."]
TINY_MELS = 80


def tiny_synth(**overrides) -> Synthesizer:
    torch.manual_seed(0)
    hp = HParams().replace(**{**TINY, **overrides})
    return Synthesizer(Tacotron2(ModelConfig.from_hparams(hp)), mel_config(hp.to_dict()))


@pytest.fixture(scope="module")
def ref() -> Synthesizer:
    torch.set_num_threads(1)
    return tiny_synth()


def test_a_seed_makes_synthesis_repeatable_and_the_tolerance_tells_seeds_apart(ref):
    a, _ = ref.mel(TEXTS[0], seed=1)
    b, _ = ref.mel(TEXTS[0], seed=1)
    c, _ = ref.mel(TEXTS[0], seed=2)
    assert (a == b).all()
    assert abs(a - c).max() > 10 * DEFAULT_TOLERANCE  # another dropout draw is far outside it


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_the_export_reproduces_the_pytorch_mel(ref, fmt, tmp_path):
    out = export_model(ref.model, ref.mel_config, tmp_path / fmt, fmt, "tiny")
    exported = Synthesizer.from_export(out)
    check = check_export(ref, exported, TEXTS, seed=3, tolerance=DEFAULT_TOLERANCE)
    assert check.ok, check
    assert check.max_abs_diff == 0.0 if fmt == "torchscript" else check.max_abs_diff < 1e-6
    a, _ = ref.mel(TEXTS[0], seed=4)
    b, _ = exported.mel(TEXTS[0], seed=3)
    assert abs(a - b).max() > DEFAULT_TOLERANCE  # the noise input matters: a wrong draw would show
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["format"] == fmt and sorted(manifest["graphs"]) == ["decoder_step", "encoder", "postnet"]
    assert ref.model.training is False  # exporting leaves the model as it found it


def walk_and_stop(synth: Synthesizer) -> None:
    """Untrained, the attention stays on the first token and the decoder runs to max_decoder_steps;
    these weights make it walk (the cumulative attention lowers a token's energy) and the gate fire
    once it reached the end of the text, so the loop's stop and window decisions are exercised."""
    dec = synth.model.decoder
    att = dec.attention
    with torch.no_grad():
        att.location_conv.weight.zero_()
        att.location_conv.weight[0, 1, att.padding] = 1.0  # filter 0 reads the cumulative attention
        att.location_dense.weight.zero_()
        att.location_dense.weight[:, 0] = -5.0
        att.v.weight.fill_(1.0)
        dec.gate.bias.fill_(6.0)


def test_an_early_gate_and_a_decoder_without_feedback_stop_at_the_same_frame(tmp_path):
    synth = tiny_synth(drop_frame_rate=1.0)  # every step reads the mean frame, not its own output
    walk_and_stop(synth)
    with torch.no_grad():
        synth.model.decoder.mean_frame.copy_(torch.linspace(-4, 1, TINY_MELS))
    out = export_model(synth.model, synth.mel_config, tmp_path / "onnx", "onnx")
    check = check_export(synth, Synthesizer.from_export(out), TEXTS, seed=0, tolerance=DEFAULT_TOLERANCE)
    assert check.ok, check
    assert check.frames[0][0] < check.frames[1][0] < TINY["max_decoder_steps"] * TINY["n_frames_per_step"]
    assert all(a == b for a, b in check.frames), check.frames


def test_a_different_length_fails_the_check():
    class Fixed:
        def __init__(self, frames: int) -> None:
            self.frames = frames

        def mel(self, text, seed):
            return torch.zeros(80, self.frames).numpy(), None

    check = check_export(Fixed(12), Fixed(15), ["x"], seed=0, tolerance=1.0)
    assert not check.ok and check.max_abs_diff == float("inf")
    assert "12 vs 15 frames" in check.line("onnx", Path("out")) and "FAILED" in check.line("onnx", Path("out"))


def test_bad_exports_are_one_clear_error(ref, tmp_path):
    with pytest.raises(ConfigError, match=r"export format 'tflite': unknown \(valid: torchscript, onnx\)"):
        export_model(ref.model, ref.mel_config, tmp_path / "x", "tflite")
    out = export_model(ref.model, ref.mel_config, tmp_path / "ts", "torchscript")
    (out / "decoder_step.pt").write_bytes(b"not a graph")
    with pytest.raises(CheckpointError, match=r"cannot load the torchscript export in .*ts: ") as e:
        Synthesizer.from_export(out)
    assert "\n" not in str(e.value)
    (out / MANIFEST).write_text(json.dumps({"format": "torchscript"}))
    with pytest.raises(CheckpointError, match=r"ttsops_export.json: not a ttsops export \(missing graphs, "):
        Synthesizer.from_export(out)
