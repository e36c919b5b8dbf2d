"""Tacotron2 losses: masked mel MSE (before and after the postnet), gate BCE, guided attention.

``val_loss`` (what the tuner and checkpoints compare) is ``mel_loss + gate_loss``, the same
quantity whatever the alignment aids' weights: the guided-attention term is a training aid only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Losses:
    total: torch.Tensor
    mel: torch.Tensor
    gate: torch.Tensor
    guided: torch.Tensor
    context_mel: torch.Tensor | None = None

    @property
    def val(self) -> torch.Tensor:
        return self.mel + self.gate


def sequence_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    return torch.arange(max_len, device=lengths.device)[None] < lengths[:, None]


def guided_attention_weights(text_lens: torch.Tensor, dec_lens: torch.Tensor, n_max: int, t_max: int,
                             sigma: float) -> torch.Tensor:
    """W[b, t, n] = 1 - exp(-(n/N - t/T)^2 / (2 sigma^2)), 0 outside each utterance."""
    n = torch.arange(n_max, device=text_lens.device).float()[None, None] / text_lens.float()[:, None, None]
    t = torch.arange(t_max, device=text_lens.device).float()[None, :, None] / dec_lens.float()[:, None, None]
    w = 1.0 - torch.exp(-((n - t) ** 2) / (2 * sigma**2))
    valid = sequence_mask(dec_lens, t_max)[:, :, None] & sequence_mask(text_lens, n_max)[:, None, :]
    return w * valid


def tacotron2_loss(
    mel_out: torch.Tensor, mel_post: torch.Tensor, gate_logits: torch.Tensor, alignments: torch.Tensor,
    mels: torch.Tensor, mel_lens: torch.Tensor, text_lens: torch.Tensor, r: int,
    gate_pos_weight: float, guided_weight: float, guided_sigma: float,
    context_mels: torch.Tensor | None = None, context_weight: float = 0.0,
) -> Losses:
    b, n_mels, t = mels.shape
    frame_mask = sequence_mask(mel_lens, t)  # (B, T)
    m = frame_mask[:, None, :].float()
    denom = m.sum() * n_mels
    mel_loss = (((mel_out - mels) ** 2 * m).sum() + ((mel_post - mels) ** 2 * m).sum()) / denom
    gate_target = (torch.arange(t, device=mels.device)[None] >= (mel_lens[:, None] - 1)).float()
    pos_weight = torch.tensor(gate_pos_weight, device=mels.device)
    gate_all = F.binary_cross_entropy_with_logits(gate_logits, gate_target, pos_weight=pos_weight, reduction="none")
    # frames past the end of the last decoder group still count (they teach "stay stopped")
    gate_mask = sequence_mask(torch.div(mel_lens + r - 1, r, rounding_mode="floor") * r, t).float()
    gate_loss = (gate_all * gate_mask).sum() / gate_mask.sum()
    dec_lens = torch.div(mel_lens + r - 1, r, rounding_mode="floor")
    if guided_weight > 0:
        w = guided_attention_weights(text_lens, dec_lens, alignments.size(2), alignments.size(1), guided_sigma)
        guided = (alignments * w).sum() / dec_lens.sum()
    else:
        guided = mels.new_zeros(())
    total = mel_loss + gate_loss + guided_weight * guided
    ctx_loss = None
    if context_mels is not None:
        ctx_loss = ((context_mels - mels) ** 2 * m).sum() / denom
        total = total + context_weight * ctx_loss
    return Losses(total, mel_loss, gate_loss, guided, ctx_loss)
