"""Running an exported Tacotron2 (``ttsops.model.export``): the graphs of one format plus the
decoder loop of ``ttsops.model.autoregress``, the loop the PyTorch model runs.

``ExportedTacotron2`` has what ``ttsops.model.inference.Synthesizer`` uses of a ``Tacotron2``
(``cfg``, ``infer``, ``to``, ``eval``), so ``Synthesizer.from_export`` is a Synthesizer like any
other: the service and ``ttsops synthesize`` run it through ``--model EXPORT_DIR``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ttsops.audio.mel import MelConfig
from ttsops.errors import CheckpointError
from ttsops.model.autoregress import LoopSettings, autoregress
from ttsops.model.config import ModelConfig
from ttsops.model.export import MANIFEST, STATE

logger = logging.getLogger(__name__)


REQUIRED = ("format", "graphs", "model_config", "mel", "mean_frame", "prenet_layers", "io")  # manifest keys


def is_export_dir(path: Path) -> bool:
    return path.is_dir() and (path / MANIFEST).is_file()


class _TorchScriptGraphs(nn.Module):
    def __init__(self, root: Path, files: dict[str, str], device: torch.device) -> None:
        super().__init__()
        self.encoder = torch.jit.load(str(root / files["encoder"]), map_location=device)
        self.decoder_step = torch.jit.load(str(root / files["decoder_step"]), map_location=device)
        self.postnet = torch.jit.load(str(root / files["postnet"]), map_location=device)

    def run(self, name: str, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = getattr(self, name)(*inputs)
        return out if isinstance(out, tuple) else (out,)


class _OnnxGraphs(nn.Module):
    """onnxruntime sessions (CPU), fed and read as torch tensors; intra-op threads as torch's."""

    def __init__(self, root: Path, files: dict[str, str], io: dict[str, Any]) -> None:
        super().__init__()
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        opts.inter_op_num_threads = 1
        self.sessions = {name: ort.InferenceSession(str(root / f), opts, providers=["CPUExecutionProvider"])
                         for name, f in files.items()}
        self.inputs = {name: list(spec["inputs"]) for name, spec in io.items()}

    def run(self, name: str, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feed = {n: x.detach().cpu().numpy() for n, x in zip(self.inputs[name], inputs, strict=True)}
        return tuple(torch.from_numpy(np.asarray(y)) for y in self.sessions[name].run(None, feed))


class ExportedTacotron2(nn.Module):
    mean_frame: torch.Tensor

    def __init__(self, root: Path, manifest: dict[str, Any], device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.format = manifest["format"]
        self.cfg = ModelConfig(**manifest["model_config"])
        self.mel = MelConfig(**manifest["mel"])
        self.register_buffer("mean_frame", torch.tensor(manifest["mean_frame"], dtype=torch.float32))
        self.prenet_layers = int(manifest["prenet_layers"])  # one uniform draw per layer and step
        self.device = torch.device(device)
        if self.format == "torchscript":
            self.graphs: _TorchScriptGraphs | _OnnxGraphs = _TorchScriptGraphs(root, manifest["graphs"], self.device)
        elif self.format == "onnx":
            if self.device.type != "cpu":
                raise CheckpointError(f"{root}: the ONNX export runs on the CPU here (got --device {device})")
            self.graphs = _OnnxGraphs(root, manifest["graphs"], manifest["io"])
        else:
            raise CheckpointError(f"{root}/{MANIFEST}: unknown format {self.format!r} (valid: torchscript, onnx)")

    def to(self, *args: Any, **kwargs: Any) -> ExportedTacotron2:  # the graphs are loaded on their device
        return self

    @torch.no_grad()
    def infer(self, text: torch.Tensor, text_lens: torch.Tensor, generator: torch.Generator | None = None):
        """As ``Tacotron2.infer`` for one text: (mel_postnet (1, n_mels, T), alignments, lengths)."""
        if text.size(0) != 1:
            raise ValueError(f"an exported model synthesises one text at a time (got a batch of {text.size(0)})")
        if generator is None:  # the noise is an input of the graph: draw it from a fresh random seed
            generator = torch.Generator(device=self.device)
            generator.seed()
        run = self.graphs.run
        memory, processed = run("encoder", text)
        zeros = memory.new_zeros
        cfg, n = self.cfg, memory.size(1)
        dims = (cfg.attention_rnn_dim, cfg.attention_rnn_dim, cfg.decoder_rnn_dim, cfg.decoder_rnn_dim, n, n,
                cfg.encoder_embedding_dim)
        state = [zeros(1, d) for d in dims]

        def step(frame: torch.Tensor, allowed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            # the draws Prenet.draw_noise makes for the PyTorch model, in the same order
            noise = torch.rand((self.prenet_layers, 1, cfg.prenet_dim), generator=generator, device=generator.device)
            frames, gate, *new_state = run("decoder_step", frame, noise, memory, processed, allowed, *state)
            state[:] = new_state
            return frames, gate, new_state[STATE.index("attention_weights")]

        settings = LoopSettings.of(cfg)
        first = zeros(1, cfg.n_mel_channels) if settings.feeds_back else self.mean_frame.to(memory.device)[None]
        mel, _, align, lengths = autoregress(step, first, text_lens.to(memory.device), n, settings)
        (mel_postnet,) = run("postnet", mel)
        return mel_postnet, align, lengths


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        missing = [k for k in REQUIRED if k not in manifest]
    except (OSError, ValueError) as e:  # JSONDecodeError is a ValueError
        raise CheckpointError(f"cannot read {path / MANIFEST}: {e}") from None
    if missing:
        raise CheckpointError(f"{path / MANIFEST}: not a ttsops export (missing {', '.join(missing)})")
    return manifest


def load_exported(path: str | Path, device: torch.device | str = "cpu") -> ExportedTacotron2:
    """An export directory -> its graphs behind the loop (``Synthesizer.from_export`` wraps it)."""
    path = Path(path)
    manifest = read_manifest(path)
    try:
        model = ExportedTacotron2(path, manifest, device)
    except CheckpointError:
        raise
    except Exception as e:  # torch.jit / onnxruntime raise their own types for a broken file
        raise CheckpointError(f"cannot load the {manifest['format']} export in {path}: {e}".splitlines()[0]) from e
    logger.info("loaded the %s export %s", model.format, path)
    return model
