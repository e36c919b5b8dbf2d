"""Tacotron2 (Shen et al. 2018) with the alignment aids that make it learn on a CPU in minutes.

Alignment is the hard part of Tacotron2 on small data: the decoder ignores the attention context as
long as the attention is useless, and the attention never becomes useful while it is ignored. Two
aids break that loop (both annealed away, so the learned attention must stand on its own):

* a beta-binomial alignment prior (RAD-TTS's static prior) mixed into the attention weights during
  training, ``w = (1 - lam) * learned + lam * prior`` with ``lam`` annealed from
  ``attention_prior_weight`` to 0: the context is near-diagonal from step 0, so the decoder learns to
  read it at once, and (unlike adding the log prior to the energies, which we tried first: the
  learned energies became mere corrections to the prior and the prior-free attention degraded after
  ~15 min) the decoder loss trains the learned attention directly all along;
* a guided-attention loss (Tachibana et al. 2017) on the *prior-free* attention, normalised per
  decoder step (not averaged over the whole text x audio grid, which dilutes it by 1/N), so the
  learned attention is pulled onto the diagonal the prior demonstrates.

At inference the prior is off; ``Decoder.infer`` adds a monotonic window around the last attended
token as a guard against skipping and repeating.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ttsops.audio.mel import MEL_PAD
from ttsops.model.autoregress import LoopSettings, autoregress
from ttsops.model.config import ModelConfig
from ttsops.model.decoder_loop import DecoderLoop, LoopDims
from ttsops.model.layers import (
    ConvBNBlock,
    LocationSensitiveAttention,
    Postnet,
    Prenet,
    beta_binomial_log_prior,
    drop_frames,
    dropout_masks,
    masked_mean_frame,
)
from ttsops.model.loss import sequence_mask


class Encoder(nn.Module):
    def __init__(self, dim: int, n_convs: int, kernel_size: int, grad_ckpt: bool) -> None:
        super().__init__()
        self.convs = nn.ModuleList(ConvBNBlock(dim, dim, kernel_size, "relu", 0.5) for _ in range(n_convs))
        self.lstm = nn.LSTM(dim, dim // 2, batch_first=True, bidirectional=True)
        self.grad_ckpt = grad_ckpt

    def convolve(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution stack: (B, dim, N) -> (B, dim, N)."""
        for conv in self.convs:
            x = checkpoint(conv, x, use_reentrant=False) if self.grad_ckpt and self.training else conv(x)
        return x

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x (B, dim, N) -> (B, N, dim)."""
        x = self.convolve(x)
        packed = nn.utils.rnn.pack_padded_sequence(
            x.transpose(1, 2), lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.size(2))
        return out


@dataclass
class DecoderOutput:
    mels: torch.Tensor  # (B, n_mels, T)
    gates: torch.Tensor  # (B, T) logits
    alignments: torch.Tensor  # (B, T_dec, N) attention used (with prior while it is on)
    learned_alignments: torch.Tensor  # (B, T_dec, N) prior-free attention (what inference sees)
    context_mels: torch.Tensor | None = None  # (B, n_mels, T) mel read off the attention context alone


class Decoder(nn.Module):
    mean_frame: torch.Tensor
    context_mel: nn.Linear | None

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        r, e = cfg.n_frames_per_step, cfg.encoder_embedding_dim
        self.prenet = Prenet(cfg.n_mel_channels, cfg.prenet_dim, cfg.dropout_prenet)
        self.attention_rnn = nn.LSTMCell(cfg.prenet_dim + e, cfg.attention_rnn_dim)
        self.attention = LocationSensitiveAttention(
            cfg.attention_rnn_dim, e, cfg.attention_dim, cfg.attention_location_n_filters,
            cfg.attention_location_kernel_size,
        )
        self.decoder_rnn = nn.LSTMCell(cfg.attention_rnn_dim + e, cfg.decoder_rnn_dim)
        self.projection = nn.Linear(cfg.decoder_rnn_dim + e, cfg.n_mel_channels * r)
        self.gate = nn.Linear(cfg.decoder_rnn_dim + e, r)
        # the mean frame (running average over training batches): what dropped decoder inputs become,
        # and the decoder's only input at inference when every input frame was dropped in training
        self.register_buffer("mean_frame", torch.zeros(cfg.n_mel_channels))
        self.context_mel = nn.Linear(e, cfg.n_mel_channels * r) if cfg.context_mel_loss_weight > 0 else None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.setdefault(prefix + "mean_frame", self.mean_frame)  # checkpoints from before the buffer
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def feeds_back(self) -> bool:
        """False when training dropped every input frame: the decoder never reads its own output."""
        return LoopSettings.of(self.cfg).feeds_back

    def _init_state(self, memory: torch.Tensor) -> dict[str, torch.Tensor]:
        b, n, e = memory.shape
        z = memory.new_zeros
        return {
            "ah": z(b, self.cfg.attention_rnn_dim), "ac": z(b, self.cfg.attention_rnn_dim),
            "dh": z(b, self.cfg.decoder_rnn_dim), "dc": z(b, self.cfg.decoder_rnn_dim),
            "w": z(b, n), "w_cum": z(b, n), "ctx": z(b, e),
        }

    def _dropout_masks(self, like: torch.Tensor, steps: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if not self.training:
            return None, None
        b, locked = like.size(0), self.cfg.variational_dropout
        return (dropout_masks(steps, (b, self.cfg.attention_rnn_dim), self.cfg.dropout_attention, locked, like),
                dropout_masks(steps, (b, self.cfg.decoder_rnn_dim), self.cfg.dropout_decoder, locked, like))

    def _step(self, s, prenet_out, memory, processed_memory, mask, loc_w, masks, prior=None, window=None):
        """One decoder step. Returns (attention used, prior-free attention); updates state ``s``."""
        ah, ac = self.attention_rnn(torch.cat([prenet_out, s["ctx"]], -1), (s["ah"], s["ac"]))
        if masks[0] is not None:
            ah = ah * masks[0]
        energies = self.attention.energies(ah, processed_memory, torch.stack([s["w"], s["w_cum"]], 1), loc_w)
        energies = energies.masked_fill(~mask, -1e4)
        if window is not None:
            energies = energies.masked_fill(~window, -1e4)
        learned = torch.softmax(energies, dim=-1)
        w = learned
        if prior is not None:  # (prior probabilities, weight): mix, so the decoder trains ``learned`` too
            w = (1.0 - prior[1]) * learned + prior[1] * prior[0]
        ctx = torch.bmm(w.unsqueeze(1), memory).squeeze(1)
        dh, dc = self.decoder_rnn(torch.cat([ah, ctx], -1), (s["dh"], s["dc"]))
        if masks[1] is not None:
            dh = dh * masks[1]
        s.update(ah=ah, ac=ac, dh=dh, dc=dc, w=w, w_cum=s["w_cum"] + w, ctx=ctx)
        return w, learned

    def forward(self, memory, text_lens, mels, mel_lens, prior_weight: float = 0.0) -> DecoderOutput:
        """Teacher forcing. memory (B, N, E), mels (B, n_mels, T) with T a multiple of r."""
        r, b = self.cfg.n_frames_per_step, memory.size(0)
        t_dec = mels.size(2) // r
        # input of step i is the last frame of group i-1 (a zero "go" frame for i = 0)
        prev = mels[:, :, r - 1::r][:, :, : t_dec - 1]
        prev = torch.cat([mels.new_zeros(b, mels.size(1), 1), prev], 2).transpose(1, 2)
        if self.training and self.cfg.drop_frame_rate > 0:
            with torch.no_grad():
                self.mean_frame.lerp_(masked_mean_frame(mels, mel_lens), 0.05 if self.mean_frame.any() else 1.0)
            prev = drop_frames(prev, self.mean_frame, self.cfg.drop_frame_rate)
        prenet_out = self.prenet(prev)  # all steps at once: (B, T_dec, P)
        processed = self.attention.memory_layer(memory)
        mask = torch.arange(memory.size(1), device=memory.device)[None] < text_lens[:, None]
        prior, steps = None, torch.div(mel_lens + r - 1, r, rounding_mode="floor")
        if prior_weight > 0:
            prior = beta_binomial_log_prior(
                text_lens, steps, memory.size(1), t_dec, self.cfg.attention_prior_scaling).exp() * mask[:, None]
        mask_a, mask_d = self._dropout_masks(memory, t_dec)
        dt = self.attention_rnn.weight_ih.dtype  # under autocast the loop still runs in the weights' dtype
        with torch.autocast(memory.device.type, enabled=False):
            dh, ctx, used, learned = self._loop(prenet_out.to(dt), memory.to(dt), processed.to(dt), mask,
                                                prior, prior_weight, mask_a, mask_d, steps)
        h = torch.cat([dh, ctx], -1).transpose(0, 1)  # (B, T_dec, D+E): projections batched over all steps
        # frames past an utterance's last decoder step are silence, as the targets are padded (zeros, a
        # loud frame in log-mel, skewed the postnet's batch norm and slowed alignment: benchmarks/README.md)
        computed = sequence_mask(steps * r, t_dec * r)
        mel_out = self.projection(h).reshape(b, t_dec * r, -1).masked_fill(~computed[..., None], MEL_PAD).transpose(1, 2)
        gates = self.gate(h).reshape(b, t_dec * r)
        ctx_mels = None
        if self.context_mel is not None:
            ctx_mels = self.context_mel(h[..., self.cfg.decoder_rnn_dim:]).reshape(b, t_dec * r, -1).transpose(1, 2)
        return DecoderOutput(mel_out, gates, used.transpose(0, 1), learned.transpose(0, 1), ctx_mels)

    def _loop(self, prenet_out, memory, processed, mask, prior, prior_weight, mask_a, mask_d, steps):
        """The recurrence of ``_step`` over all teacher-forced steps as one autograd node
        (``decoder_loop.DecoderLoop``), with the weights fused as that node expects. Each row runs its
        own ``steps`` decoder steps (the node wants them longest first: rows are reordered and back)."""
        att, dec, p = self.attention_rnn, self.decoder_rnn, self.cfg.prenet_dim
        ha = self.cfg.attention_rnn_dim
        # the prenet's share of the attention LSTM's input projection, for all steps in one matmul
        xa = F.linear(prenet_out.transpose(0, 1), att.weight_ih[:, :p], att.bias_ih + att.bias_hh)
        w_ah = torch.cat([self.attention.query_layer.weight, dec.weight_ih[:, :ha], att.weight_hh])
        w_ctx = torch.cat([dec.weight_ih[:, ha:], att.weight_ih[:, p:]])
        lengths = [min(int(n), xa.size(0)) for n in steps.tolist()]
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])  # stable
        dims = LoopDims(ha, self.cfg.decoder_rnn_dim, self.cfg.attention_dim, self.cfg.attention_location_kernel_size,
                        tuple(lengths[i] for i in order))
        prior = None if prior is None else prior_weight * prior.transpose(0, 1)
        mask_a = None if mask_a is None else mask_a.to(xa.dtype)
        mask_d = None if mask_d is None else mask_d.to(xa.dtype)
        reordered = order != sorted(order)
        if reordered:
            idx = torch.tensor(order, device=xa.device)
            xa, prior, mask_a, mask_d = (None if x is None else x.index_select(1, idx) for x in (xa, prior, mask_a, mask_d))
            memory, processed, mask = (x.index_select(0, idx) for x in (memory, processed, mask))
        out = DecoderLoop.apply(
            xa, memory, processed, w_ah, w_ctx, dec.weight_hh, dec.bias_ih + dec.bias_hh,
            self.attention.fused_location_weight(), self.attention.v.weight, self.attention.v.bias, mask,
            prior, float(prior_weight), mask_a, mask_d, dims)
        if reordered:
            back = torch.tensor(sorted(range(len(order)), key=order.__getitem__), device=xa.device)
            out = tuple(x.index_select(1, back) for x in out)
        return out

    def project(self, s: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The frames (B, r, n_mels) and gate logits (B, r) of the step that left state ``s``."""
        h = torch.cat([s["dh"], s["ctx"]], -1)
        return self.projection(h).view(h.size(0), self.cfg.n_frames_per_step, -1), self.gate(h)

    def first_frame(self, b: int, like: torch.Tensor) -> torch.Tensor:
        """The decoder's input at step 0: the zero "go" frame, or the mean frame when it never reads frames."""
        if self.feeds_back:
            return like.new_zeros(b, self.cfg.n_mel_channels)
        return self.mean_frame.to(like.dtype).expand(b, -1)

    @torch.no_grad()
    def infer(self, memory: torch.Tensor, text_lens: torch.Tensor, window: int = 3,
              generator: torch.Generator | None = None):
        """Free-running synthesis for a batch of one or more texts (stops when all gates fire).
        ``generator`` draws the prenet's dropout masks (repeatable synthesis); None: the global one."""
        processed = self.attention.memory_layer(memory)
        loc_w = self.attention.fused_location_weight()
        s = self._init_state(memory)

        def step(frame: torch.Tensor, allowed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            noise = None if generator is None else self.prenet.draw_noise(frame.size(0), generator)
            w, _ = self._step(s, self.prenet(frame, noise), memory, processed, allowed, loc_w, (None, None))
            return (*self.project(s), w)

        first = self.first_frame(memory.size(0), memory)
        return autoregress(step, first, text_lens, memory.size(1), LoopSettings.of(self.cfg, window))


class Tacotron2(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.Embedding(cfg.n_symbols, cfg.encoder_embedding_dim)
        nn.init.normal_(self.embedding.weight, 0.0, 0.3)
        self.encoder = Encoder(cfg.encoder_embedding_dim, cfg.encoder_n_convolutions,
                               cfg.encoder_kernel_size, cfg.gradient_checkpointing)
        self.decoder = Decoder(cfg)
        self.postnet = Postnet(cfg.n_mel_channels, cfg.postnet_embedding_dim, cfg.postnet_kernel_size,
                               cfg.postnet_n_convolutions)

    def encode(self, text: torch.Tensor, text_lens: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.embedding(text).transpose(1, 2), text_lens)

    def _postnet(self, mel: torch.Tensor) -> torch.Tensor:
        if self.cfg.gradient_checkpointing and self.training:
            return mel + checkpoint(self.postnet, mel, use_reentrant=False)
        return mel + self.postnet(mel)

    def forward(self, text, text_lens, mels, mel_lens, prior_weight: float = 0.0):
        memory = self.encode(text, text_lens)
        out = self.decoder(memory, text_lens, mels, mel_lens, prior_weight)
        return out, self._postnet(out.mels)

    @torch.no_grad()
    def infer(self, text: torch.Tensor, text_lens: torch.Tensor, generator: torch.Generator | None = None):
        """-> (mel_postnet (B, n_mels, T), alignments (B, T_dec, N), mel lengths (B,)); ``generator``
        makes the prenet's dropout (on at inference) repeatable."""
        memory = self.encode(text, text_lens)
        mel, _, align, lengths = self.decoder.infer(memory, text_lens, generator=generator)
        return self._postnet(mel), align, lengths
