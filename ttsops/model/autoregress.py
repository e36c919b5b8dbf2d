"""The free-running decoder loop of inference, apart from what computes one step.

``Decoder.infer`` runs it on the PyTorch modules; ``ttsops.model.exported`` runs the same loop on
exported graphs (TorchScript or ONNX), so both stop, window and feed back identically and an
exported model can be checked against the PyTorch one frame by frame.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ttsops.model.config import ModelConfig

# (previous frame (B, n_mels), allowed tokens (B, N) bool) -> (frames (B, r, n_mels), gate logits
# (B, r), attention weights (B, N)); the step keeps its recurrent state itself
StepFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class LoopSettings:
    n_frames_per_step: int
    max_decoder_steps: int
    gate_threshold: float
    feeds_back: bool  # False: every step reads ``first_frame`` (training dropped every input frame)
    window: int = 3  # tokens ahead of the furthest attended one the attention may look at

    @classmethod
    def of(cls, cfg: ModelConfig, window: int = 3) -> LoopSettings:
        """A model's settings: it feeds its output back unless training dropped every input frame."""
        return cls(cfg.n_frames_per_step, cfg.max_decoder_steps, cfg.gate_threshold, cfg.drop_frame_rate < 1.0,
                   window)


def autoregress(step: StepFn, first_frame: torch.Tensor, text_lens: torch.Tensor, n_tokens: int,
                cfg: LoopSettings) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decode until every gate fired at the end of its text (or ``max_decoder_steps``).

    The attention may only look from one token behind the furthest token it attended so far to
    ``window`` ahead (a guard against skipping and repeating); a gate only counts once the attention
    reached the last two tokens. Returns (mel (B, n_mels, T), gate logits (B, T), alignments
    (B, T_dec, N), mel lengths (B,)).
    """
    r, b, dev = cfg.n_frames_per_step, first_frame.size(0), first_frame.device
    pos = torch.arange(n_tokens, device=dev)[None]
    mask = pos < text_lens[:, None]
    frame = first_frame
    focus = torch.zeros(b, dtype=torch.long, device=dev)
    done = torch.zeros(b, dtype=torch.bool, device=dev)
    lengths = torch.full((b,), cfg.max_decoder_steps * r, dtype=torch.long, device=dev)
    mels, gates, aligns = [], [], []
    for i in range(cfg.max_decoder_steps):
        window = (pos >= (focus[:, None] - 1)) & (pos <= focus[:, None] + cfg.window)
        out, g, w = step(frame, mask & window)
        focus = torch.maximum(focus, w.argmax(-1))
        mels.append(out)
        gates.append(g)
        aligns.append(w)
        frame = out[:, -1] if cfg.feeds_back else frame
        at_end = focus >= text_lens - 2
        stop = (torch.sigmoid(g) > cfg.gate_threshold).any(-1) & at_end & ~done
        lengths = torch.where(stop, torch.full_like(lengths, (i + 1) * r), lengths)
        done |= stop
        if bool(done.all()):
            break
    mel = torch.cat(mels, 1).transpose(1, 2)
    return mel, torch.cat(gates, 1), torch.stack(aligns, 1), lengths
