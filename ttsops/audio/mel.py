"""The one mel-spectrogram definition, shared by training, metrics, vocoding and serving.

Log-mel as in NVIDIA's Tacotron2: magnitude STFT (Hann window), Slaney mel filterbank
(librosa's, computed once), natural log clamped at 1e-5. Computed with torch so it runs on the
training device and needs no numba warm-up (librosa's first mel call costs ~18 s in a fresh venv).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
import torch

LOG_CLAMP = 1e-5
MEL_PAD = math.log(LOG_CLAMP)  # silence in log-mel: what padded frames hold


@dataclass(frozen=True)
class MelConfig:
    sample_rate: int = 22050
    n_fft: int = 1024
    hop_length: int = 256
    win_length: int = 1024
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float | None = 8000.0

    def fingerprint(self) -> str:
        """Stable short hash of the parameters (part of the mel cache key)."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


@lru_cache(maxsize=8)
def _mel_basis(cfg: MelConfig) -> np.ndarray:
    import librosa  # lazy: librosa's import is slow and only the filterbank is needed

    fmax = cfg.fmax if cfg.fmax is not None else cfg.sample_rate / 2
    return librosa.filters.mel(
        sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=fmax
    ).astype(np.float32)


class MelExtractor:
    """Waveform -> log-mel (n_mels, frames); also the linear<->mel maps the vocoder needs."""

    def __init__(self, cfg: MelConfig, device: torch.device | str = "cpu") -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.basis = torch.from_numpy(_mel_basis(cfg)).to(self.device)
        self.window = torch.hann_window(cfg.win_length, device=self.device)

    def magnitude(self, wav: torch.Tensor) -> torch.Tensor:
        """(..., samples) -> magnitude STFT (..., n_fft//2+1, frames)."""
        spec = torch.stft(
            wav.to(self.device),
            n_fft=self.cfg.n_fft,
            hop_length=self.cfg.hop_length,
            win_length=self.cfg.win_length,
            window=self.window,
            center=True,
            return_complex=True,
        )
        return spec.abs()

    def __call__(self, wav: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Waveform (samples,) or (batch, samples) in [-1, 1] -> log-mel (..., n_mels, frames)."""
        x = torch.as_tensor(wav, dtype=torch.float32)
        mel = torch.matmul(self.basis, self.magnitude(x))
        return torch.log(torch.clamp(mel, min=LOG_CLAMP))

    def mel_to_linear(self, log_mel: torch.Tensor) -> torch.Tensor:
        """Approximate magnitude spectrogram from log-mel (least squares via the pseudo-inverse)."""
        mel = torch.exp(log_mel.to(self.device))
        inv = torch.linalg.pinv(self.basis)
        return torch.clamp(torch.matmul(inv, mel), min=0.0)
