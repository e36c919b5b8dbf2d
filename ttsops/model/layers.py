"""Building blocks of Tacotron2, each configured by explicit arguments (no hparams bags)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def dropout(x: torch.Tensor, p: float, training: bool, uniform: torch.Tensor | None = None) -> torch.Tensor:
    """``F.dropout`` with the mask drawn as ``rand < 1 - p`` on the CPU: the same Bernoulli(1 - p)
    distribution and the same kept values (``x * (1 / (1 - p))``), but ATen's CPU ``bernoulli_``
    costs ~3x more than ``rand`` + compare (a third of F.dropout's time on a (16, 128, 388) postnet
    activation; ~6% of a training step). Another random stream than F.dropout's for the same seed.

    ``uniform`` (shaped like ``x``, values in [0, 1)) is the draw to use instead of a fresh one: a
    seeded generator's, or an exported graph's input (then ``p`` = 0 keeps everything, as it must)."""
    if uniform is not None and training and p < 1:
        return x * (uniform < 1 - p).to(x.dtype) * (1 / (1 - p))
    if not training or p <= 0:
        return x
    if x.device.type != "cpu" or p >= 1:
        return F.dropout(x, p, training)
    return x * (torch.rand_like(x) < 1 - p).to(x.dtype).mul_(1 / (1 - p))


class ConvBNBlock(nn.Module):
    """Conv1d -> BatchNorm -> activation -> dropout, 'same' padding."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, activation: str | None, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel_size, padding=(kernel_size - 1) // 2)
        self.bn = nn.BatchNorm1d(c_out)
        acts: dict[str | None, Callable[[torch.Tensor], torch.Tensor]] = {
            "relu": F.relu, "tanh": torch.tanh, None: lambda x: x}
        self.activation = acts[activation]
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(self.activation(self.bn(self.conv(x))), self.dropout, self.training)


class Prenet(nn.Module):
    """Two ReLU layers with dropout that stays on at inference (Tacotron2's information bottleneck,
    which forces the decoder to rely on attention context rather than on the previous frame)."""

    def __init__(self, in_dim: int, dim: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(in_dim, dim, bias=False), nn.Linear(dim, dim, bias=False)])
        self.dropout = dropout
        self.dim = dim

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """``noise`` (n_layers, *x.shape[:-1], dim): uniform draws for the dropout masks, one per
        layer (``draw_noise``); None draws them from the global generator."""
        for i, layer in enumerate(self.layers):
            x = dropout(F.relu(layer(x)), self.dropout, True, None if noise is None else noise[i])
        return x

    def draw_noise(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """The uniform draws ``forward`` needs for a batch of single frames, from ``generator`` (on
        its device): what makes seeded synthesis repeatable and lets an exported graph take them as input."""
        return torch.rand((len(self.layers), batch, self.dim), generator=generator, device=generator.device)


class LocationSensitiveAttention(nn.Module):
    """Additive attention over encoder outputs with location features (Chorowski et al. 2015).

    The location branch (conv over previous and cumulative attention, then a linear map) is linear,
    so it is fused into one conv per forward pass: one conv per decoder step instead of two ops.
    """

    def __init__(self, query_dim: int, memory_dim: int, attention_dim: int, n_filters: int, kernel_size: int) -> None:
        super().__init__()
        self.query_layer = nn.Linear(query_dim, attention_dim, bias=False)
        self.memory_layer = nn.Linear(memory_dim, attention_dim, bias=False)
        self.v = nn.Linear(attention_dim, 1, bias=True)
        self.location_conv = nn.Conv1d(2, n_filters, kernel_size, padding=(kernel_size - 1) // 2, bias=False)
        self.location_dense = nn.Linear(n_filters, attention_dim, bias=False)
        self.padding = (kernel_size - 1) // 2

    def fused_location_weight(self) -> torch.Tensor:
        """(A, F) @ (F, 2, K) -> (2K, A): conv and dense as one linear map over the unfolded window."""
        w = torch.einsum("af,fck->ack", self.location_dense.weight, self.location_conv.weight)
        return w.reshape(w.size(0), -1).t()

    def energies(
        self, query: torch.Tensor, processed_memory: torch.Tensor, attention_cat: torch.Tensor,
        location_weight: torch.Tensor,
    ) -> torch.Tensor:
        """query (B, Q), processed_memory (B, N, A), attention_cat (B, 2, N) -> energies (B, N).

        ``location_weight`` is ``fused_location_weight()`` flattened to (2K, A). The convolution is an
        unfold + matmul: for these tiny per-step convolutions that is ~10x faster on CPU than a conv
        call (whose fixed overhead dominates), and the same maths.
        """
        cols = _windows(F.pad(attention_cat, (self.padding, self.padding)), location_weight.size(0) // 2)
        b, c, n, k = cols.shape
        loc = cols.permute(0, 2, 1, 3).reshape(b, n, c * k) @ location_weight
        q = self.query_layer(query).unsqueeze(1)
        return self.v(torch.tanh(q + loc + processed_memory)).squeeze(-1)


def _windows(x: torch.Tensor, k: int) -> torch.Tensor:
    """(B, C, L) -> (B, C, L - k + 1, k), every length-k window: ``unfold``, which the ONNX exporter
    cannot write for a length known only at run time, so there the same values come from a gather."""
    if not torch.onnx.is_in_onnx_export():
        return x.unfold(2, k, 1)
    starts = torch.arange(x.size(2) - k + 1, device=x.device)
    return x[:, :, starts[:, None] + torch.arange(k, device=x.device)[None]]


class Postnet(nn.Module):
    """Five 1-D convolutions predicting a residual that sharpens the decoder's mel output."""

    def __init__(self, n_mels: int, dim: int, kernel_size: int, n_convs: int, dropout: float = 0.5) -> None:
        super().__init__()
        chans = [n_mels] + [dim] * (n_convs - 1) + [n_mels]
        acts = ["tanh"] * (n_convs - 1) + [None]
        self.convs = nn.ModuleList(
            ConvBNBlock(chans[i], chans[i + 1], kernel_size, acts[i], dropout) for i in range(n_convs)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = conv(x)
        return x


def dropout_masks(steps: int, shape: tuple[int, int], p: float, locked: bool, like: torch.Tensor) -> torch.Tensor | None:
    """Dropout masks for every decoder step at once, (steps, B, H): one Bernoulli call instead of one
    per step. ``locked`` (variational dropout): one mask per sequence, reused at every step."""
    if p <= 0:
        return None
    full = shape if locked else (steps, *shape)
    masks = (torch.rand(full, device=like.device) < 1 - p).to(like.dtype).mul_(1 / (1 - p))  # see dropout()
    return masks.expand(steps, *shape) if locked else masks


def spectral_dropout(mels: torch.Tensor, p: float, max_width: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """SpecAugment-style masking of teacher-forcing inputs: with probability ``p`` per utterance, zero
    (in log-mel terms: set to the utterance minimum) one band of up to ``max_width`` mel channels and
    one span of up to ``max_width`` frames. Makes the decoder lean on attention context instead of
    copying the previous frame. mels: (B, n_mels, T)."""
    if p <= 0:
        return mels
    b, n_mels, t = mels.shape
    out = mels.clone()
    floor = mels.amin(dim=(1, 2), keepdim=True)
    dev = mels.device
    apply = torch.rand(b, generator=generator) < p
    for i in torch.nonzero(apply).flatten().tolist():
        fw = int(torch.randint(1, max_width + 1, (1,), generator=generator))
        f0 = int(torch.randint(0, max(1, n_mels - fw), (1,), generator=generator))
        tw = int(torch.randint(1, max_width + 1, (1,), generator=generator))
        t0 = int(torch.randint(0, max(1, t - tw), (1,), generator=generator))
        out[i, f0:f0 + fw, :] = floor[i]
        out[i, :, t0:t0 + tw] = floor[i]
    return out.to(dev)


def beta_binomial_log_prior(text_lens: torch.Tensor, steps: torch.Tensor, n_max: int, t_max: int, scaling: float) -> torch.Tensor:
    """Log beta-binomial alignment prior (Badlani et al. 2022, "One TTS Alignment to Rule Them All").

    For decoder step t (1..T) of an utterance with N tokens, P(token k) = BetaBinomial(k; N-1,
    a*t, a*(T+1-t)): a soft diagonal band. Returns (B, t_max, n_max); padded cells are 0.
    """
    dev = text_lens.device
    k = torch.arange(n_max, device=dev, dtype=torch.float32).view(1, 1, -1)
    t = torch.arange(1, t_max + 1, device=dev, dtype=torch.float32).view(1, -1, 1)
    n = (text_lens.float() - 1).clamp(min=0).view(-1, 1, 1)
    big_t = steps.float().view(-1, 1, 1)
    alpha = scaling * t
    beta = scaling * (big_t + 1 - t).clamp(min=1e-3)

    def lbeta(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)

    kk = torch.minimum(k, n)
    log_p = (
        torch.lgamma(n + 1) - torch.lgamma(kk + 1) - torch.lgamma(n - kk + 1)
        + lbeta(kk + alpha, n - kk + beta) - lbeta(alpha, beta)
    )
    valid = (k <= n) & (t <= big_t)
    return torch.where(valid, log_p, torch.zeros_like(log_p))


def masked_mean_frame(mels: torch.Tensor, mel_lens: torch.Tensor) -> torch.Tensor:
    """The mean of the valid frames of a padded batch (B, n_mels, T) -> (n_mels,)."""
    valid = (torch.arange(mels.size(2), device=mels.device)[None] < mel_lens[:, None]).to(mels.dtype)
    return (mels * valid[:, None]).sum((0, 2)) / valid.sum().clamp(min=1)


def drop_frames(prev: torch.Tensor, mean_frame: torch.Tensor, p: float) -> torch.Tensor:
    """Frame dropout (Liu et al. 2019, "Maximizing mutual information for Tacotron"): replace a share
    ``p`` of the teacher-forced decoder inputs ``prev`` (B, T_dec, n_mels) by the mean frame, so the
    decoder cannot predict a frame by copying the previous one and has to read the attention context
    (the local-information preference that makes free-running output a smear of the mean spectrum).
    ``p`` = 1 drops every input: the decoder never sees a frame, at inference either."""
    if p >= 1.0:
        return mean_frame.to(prev.dtype).expand_as(prev)
    drop = torch.rand(prev.shape[:2], device=prev.device) < p
    return torch.where(drop[..., None], mean_frame.to(prev.dtype), prev)
