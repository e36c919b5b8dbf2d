"""Text -> waveform with a trained checkpoint: what the service, the CLI and the demo call.

Thread-safe for concurrent requests: the model is in eval mode and ``synthesize`` keeps no state
between calls (each call has its own decoder state), so no global lock is needed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ttsops.audio.mel import MelConfig
from ttsops.audio.vocoder import GriffinLim, Vocoder
from ttsops.errors import ServeError
from ttsops.model.checkpoint import load_checkpoint
from ttsops.model.config import ModelConfig, mel_config
from ttsops.model.exported import ExportedTacotron2, is_export_dir, load_exported
from ttsops.model.tacotron2 import Tacotron2
from ttsops.text.frontend import text_frontend

logger = logging.getLogger(__name__)


class Synthesizer:
    def __init__(self, model: Tacotron2 | ExportedTacotron2, mel: MelConfig, vocoder: Vocoder | None = None,
                 device: torch.device | str = "cpu", source: str = "") -> None:
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.vocoder = vocoder or GriffinLim(mel)
        self.sample_rate = mel.sample_rate
        self.mel_config = mel
        self.source = source
        self.frontend = text_frontend(model.cfg.text_frontend)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: torch.device | str = "cpu",
                        vocoder: Vocoder | None = None) -> Synthesizer:
        state = load_checkpoint(path, device)
        hp = state.get("hparams", {})
        model = Tacotron2(ModelConfig.from_hparams(hp))
        model.load_state_dict(state["model"])
        logger.info("loaded %s (step %s)", path, state.get("step"))
        return cls(model, mel_config(hp), vocoder, device, str(path))

    @classmethod
    def from_export(cls, path: str | Path, device: torch.device | str = "cpu",
                    vocoder: Vocoder | None = None) -> Synthesizer:
        """An export directory of ``ttsops export`` (TorchScript or ONNX graphs, the same loop)."""
        model = load_exported(path, device)
        return cls(model, model.mel, vocoder, device, str(path))

    @classmethod
    def from_path(cls, path: str | Path, device: torch.device | str = "cpu") -> Synthesizer:
        """A checkpoint file or an export directory."""
        return cls.from_export(path, device) if is_export_dir(Path(path)) else cls.from_checkpoint(path, device)

    @torch.no_grad()
    def mel(self, text: str, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """-> (log-mel (n_mels, T), alignment (T_dec, N)). The prenet's dropout stays on at inference:
        a ``seed`` makes the result repeatable (and equal across the exported formats); None: random."""
        ids = self.frontend.to_ids([text])[0]
        if len(ids) <= 1:
            raise ServeError(f"text has nothing to say after normalisation: {text!r}")
        x = torch.tensor([ids], device=self.device)
        gen = None if seed is None else torch.Generator(device=self.device).manual_seed(seed)
        mel, align, lengths = self.model.infer(x, torch.tensor([len(ids)], device=self.device), generator=gen)
        n = int(lengths[0])
        r = self.model.cfg.n_frames_per_step
        steps = (n + r - 1) // r
        return mel[0, :, :n].float().cpu().numpy(), align[0, :steps].float().cpu().numpy()

    def speak(self, text: str) -> tuple[np.ndarray, int, bool]:
        """-> (waveform, sample rate, whether the gate stopped it before ``max_decoder_steps``)."""
        mel, _ = self.mel(text)
        cfg = self.model.cfg
        return self.vocoder(mel), self.sample_rate, mel.shape[1] < cfg.max_decoder_steps * cfg.n_frames_per_step

    def synthesize(self, text: str, seed: int | None = None) -> tuple[np.ndarray, int]:
        mel, _ = self.mel(text, seed)
        return self.vocoder(mel), self.sample_rate
