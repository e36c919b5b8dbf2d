"""Vocoders: log-mel -> waveform. Griffin-Lim is the default; a neural vocoder plugs in by
implementing the ``Vocoder`` protocol."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch

from ttsops.audio.mel import MEL_PAD, MelConfig, MelExtractor


class Vocoder(Protocol):
    sample_rate: int

    def __call__(self, log_mel: np.ndarray | torch.Tensor) -> np.ndarray: ...


class GriffinLim:
    """Fast Griffin-Lim (Perraudin et al. 2013, momentum 0.99) on the mel pseudo-inverse.

    ``power`` > 1 sharpens the magnitude before phase recovery, which reduces the metallic
    smear typical of Griffin-Lim on predicted (over-smoothed) mels. A mel too short for the STFT's
    reflect padding (a decoder that stopped after a frame or two) is padded with silence first.
    """

    def __init__(
        self,
        mel_cfg: MelConfig,
        n_iter: int = 32,
        momentum: float = 0.99,
        power: float = 1.2,
        device: torch.device | str = "cpu",
    ) -> None:
        self.mel = MelExtractor(mel_cfg, device)
        self.sample_rate = mel_cfg.sample_rate
        self.n_iter = n_iter
        self.momentum = momentum
        self.power = power

    def __call__(self, log_mel: np.ndarray | torch.Tensor) -> np.ndarray:
        cfg = self.mel.cfg
        log_mel = torch.as_tensor(log_mel, dtype=torch.float32)
        # center=True reflect-pads n_fft // 2 samples, which needs (frames - 1) * hop samples beyond that
        short = cfg.n_fft // (2 * cfg.hop_length) + 2 - log_mel.shape[-1]
        if short > 0:
            log_mel = torch.nn.functional.pad(log_mel, (0, short), value=MEL_PAD)
        mag = self.mel.mel_to_linear(log_mel) ** self.power
        gen = torch.Generator(device="cpu").manual_seed(0)  # deterministic audio for a given mel
        angles = torch.exp(2j * np.pi * torch.rand(mag.shape, generator=gen)).to(mag.device)
        prev = torch.zeros_like(angles)
        kw: dict[str, Any] = dict(
            n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
            window=self.mel.window, center=True,
        )
        wav = torch.istft(mag * angles, **kw)
        for _ in range(self.n_iter):
            rebuilt = torch.stft(wav, return_complex=True, **kw)
            accel = rebuilt - (self.momentum / (1 + self.momentum)) * prev
            angles = accel / accel.abs().clamp(min=1e-8)
            prev = rebuilt
            wav = torch.istft(mag * angles, **kw)
        out = wav.cpu().numpy().astype(np.float32)
        peak = float(np.abs(out).max()) if out.size else 0.0
        return out / peak * 0.95 if peak > 0 else out
