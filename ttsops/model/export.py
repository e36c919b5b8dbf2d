"""Tacotron2's inference path as three graphs, written as TorchScript or ONNX.

The decoder is autoregressive with a data-dependent stop, so it is not one graph: ``encoder``
(text ids -> memory), ``decoder_step`` (one step: previous frame + recurrent state -> frames, gate,
new state) and ``postnet`` (mel -> refined mel) are traced separately, and the loop between them is
``ttsops.model.autoregress`` (the same loop ``Decoder.infer`` runs), driven by
``ttsops.model.exported``. The prenet's dropout stays on at inference (Tacotron2's design), so its
uniform draws are an input of ``decoder_step``: the runtime draws them from a seeded generator
exactly as the PyTorch model does, which makes the two comparable frame by frame.

One export directory per format, each self-contained::

    OUT/torchscript/  ttsops_export.json  encoder.pt    decoder_step.pt    postnet.pt
    OUT/onnx/         ttsops_export.json  encoder.onnx  decoder_step.onnx  postnet.onnx

``ttsops_export.json`` holds the model config, the mel features (for the vocoder), the mean frame, the graphs' input and output names and, once ``ttsops export`` checked it, the measured
difference to the PyTorch model. Graphs take a batch of one text (the encoder is not packed).
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ttsops.audio.mel import MelConfig
from ttsops.errors import ConfigError
from ttsops.infra.atomic import atomic_write_text
from ttsops.model.tacotron2 import Tacotron2

logger = logging.getLogger(__name__)

MANIFEST = "ttsops_export.json"
FORMATS = {"torchscript": ".pt", "onnx": ".onnx"}
STATE = ("attention_hidden", "attention_cell", "decoder_hidden", "decoder_cell",
         "attention_weights", "attention_weights_cum", "context")
_STATE_KEYS = ("ah", "ac", "dh", "dc", "w", "w_cum", "ctx")  # Decoder._step's names for STATE
IO: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "encoder": (("text",), ("memory", "processed_memory")),
    "decoder_step": (("frame", "prenet_noise", "memory", "processed_memory", "allowed", *STATE),
                     ("frames", "gate", *(f"next_{n}" for n in STATE))),
    "postnet": (("mel",), ("mel_postnet",)),
}
ONNX_OPSET = 17


class EncoderGraph(nn.Module):
    """text ids (1, N) -> memory (1, N, E), the attention's processed memory (1, N, A)."""

    def __init__(self, model: Tacotron2) -> None:
        super().__init__()
        self.model = model

    def forward(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.model
        memory, _ = m.encoder.lstm(m.encoder.convolve(m.embedding(text).transpose(1, 2)).transpose(1, 2))
        return memory, m.decoder.attention.memory_layer(memory)


class DecoderStepGraph(nn.Module):
    """One decoder step (``Decoder._step`` + ``Decoder.project``), its state passed in and out."""

    def __init__(self, model: Tacotron2) -> None:
        super().__init__()
        self.decoder = model.decoder

    def forward(self, frame, prenet_noise, memory, processed_memory, allowed, *state):
        d = self.decoder
        s = dict(zip(_STATE_KEYS, state, strict=True))
        loc_w = d.attention.fused_location_weight()
        d._step(s, d.prenet(frame, prenet_noise), memory, processed_memory, allowed, loc_w, (None, None))
        frames, gate = d.project(s)
        return (frames, gate, *(s[k] for k in _STATE_KEYS))


class PostnetGraph(nn.Module):
    """mel (1, n_mels, T) -> mel + postnet(mel)."""

    def __init__(self, model: Tacotron2) -> None:
        super().__init__()
        self.model = model

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.model._postnet(mel)


def example_inputs(model: Tacotron2, n_tokens: int = 7, n_frames: int = 5) -> dict[str, tuple[torch.Tensor, ...]]:
    """Inputs of the right shapes for tracing each graph (values do not matter: no branch reads them)."""
    cfg, dev = model.cfg, next(model.parameters()).device
    text = torch.randint(1, cfg.n_symbols, (1, n_tokens), device=dev)
    memory, processed = EncoderGraph(model)(text)
    state = model.decoder._init_state(memory)
    noise = torch.rand((len(model.decoder.prenet.layers), 1, cfg.prenet_dim), device=dev)
    allowed = torch.ones(1, n_tokens, dtype=torch.bool, device=dev)
    step = (model.decoder.first_frame(1, memory), noise, memory, processed, allowed,
            *(state[k] for k in _STATE_KEYS))
    return {"encoder": (text,), "decoder_step": step,
            "postnet": (torch.zeros(1, cfg.n_mel_channels, n_frames, device=dev),)}


def _graphs(model: Tacotron2) -> dict[str, nn.Module]:
    """The three wrappers, in eval mode: the ONNX exporter restores each wrapper's mode recursively
    after writing it, which would leave a wrapper created in training mode's model training."""
    graphs = {"encoder": EncoderGraph(model), "decoder_step": DecoderStepGraph(model), "postnet": PostnetGraph(model)}
    return {name: g.eval() for name, g in graphs.items()}


def _dynamic_axes(name: str) -> dict[str, dict[int, str]]:
    """The token axis (N) of every input and output that has one, and the frame axis (T) of the postnet."""
    if name == "postnet":
        return {"mel": {2: "frames"}, "mel_postnet": {2: "frames"}}
    token_axis = {"text": 1, "memory": 1, "processed_memory": 1, "allowed": 1, "attention_weights": 1,
                  "attention_weights_cum": 1, "next_attention_weights": 1, "next_attention_weights_cum": 1}
    inputs, outputs = IO[name]
    return {n: {token_axis[n]: "tokens"} for n in (*inputs, *outputs) if n in token_axis}


def _write_graph(fmt: str, name: str, graph: nn.Module, inputs: tuple[torch.Tensor, ...], path: Path) -> None:
    with warnings.catch_warnings():  # the exporters' deprecation and tracer notes are not ours to act on
        warnings.simplefilter("ignore")
        if fmt == "torchscript":
            torch.jit.save(torch.jit.trace(graph, inputs, check_trace=False), str(path))
            return
        names_in, names_out = IO[name]
        torch.onnx.export(graph, inputs, str(path), input_names=list(names_in), output_names=list(names_out),
                          dynamic_axes=_dynamic_axes(name), opset_version=ONNX_OPSET, dynamo=False)


def export_model(model: Tacotron2, mel: MelConfig, out_dir: Path, fmt: str, source: str = "") -> Path:
    """Write ``model`` (eval mode, CPU) in format ``fmt`` to ``out_dir``; returns that directory.
    ``mel`` is the features it predicts (what the vocoder needs)."""
    if fmt not in FORMATS:
        raise ConfigError(f"export format {fmt!r}: unknown (valid: {', '.join(FORMATS)})")
    if fmt == "onnx":
        try:
            import onnx  # noqa: F401  (torch.onnx's exporter needs it)
        except ImportError as e:
            raise ConfigError("ONNX export needs the onnx package: pip install 'onnx==1.23.2'") from e
    model = model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    examples = example_inputs(model)
    graphs = {}
    with torch.no_grad():
        for name, graph in _graphs(model).items():
            graphs[name] = f"{name}{FORMATS[fmt]}"
            _write_graph(fmt, name, graph, examples[name], out_dir / graphs[name])
    manifest = {
        "format": fmt, "version": 1, "source": source, "graphs": graphs,
        "io": {name: {"inputs": list(i), "outputs": list(o)} for name, (i, o) in IO.items()},
        "model_config": asdict(model.cfg), "mel": asdict(mel), "mean_frame": model.decoder.mean_frame.tolist(),
        "prenet_layers": len(model.decoder.prenet.layers),
    }
    atomic_write_text(out_dir / MANIFEST, json.dumps(manifest, indent=1, default=str))
    logger.info("exported %s as %s to %s", source or "the model", fmt, out_dir)
    return out_dir


def record_check(out_dir: Path, check: dict[str, Any]) -> None:
    """Add the numerical check ``ttsops export`` ran to the export's manifest."""
    manifest = json.loads((out_dir / MANIFEST).read_text())
    manifest["check"] = check
    atomic_write_text(out_dir / MANIFEST, json.dumps(manifest, indent=1, default=str))
