"""The training state machine: model, optimiser, schedule, AMP, one step, validation, checkpoints."""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from ttsops.model.layers import spectral_dropout
from ttsops.model.loss import Losses, tacotron2_loss
from ttsops.model.tacotron2 import DecoderOutput, ModelConfig, Tacotron2
from ttsops.train.checkpoint import steps_on_cpu
from ttsops.train.distributed import DistInfo, all_reduce_mean, any_rank
from ttsops.train.hparams import HParams
from ttsops.train.reproducibility import seed_everything

logger = logging.getLogger(__name__)


def lr_lambda(hp: HParams):
    """Linear warm-up, then constant, then x``lr_decay_rate`` every ``lr_decay_steps``."""

    def f(step: int) -> float:
        warm = min(1.0, (step + 1) / hp.lr_warmup_steps) if hp.lr_warmup_steps > 0 else 1.0
        if step < hp.lr_decay_start:
            return warm
        return warm * hp.lr_decay_rate ** ((step - hp.lr_decay_start) / hp.lr_decay_steps)

    return f


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    """The generator states are CPU byte tensors; a checkpoint loaded with ``map_location="cuda"`` moved them
    to the GPU, where ``set_rng_state`` refuses them (found on an H200 resuming an autocast run)."""
    torch.set_rng_state(state["torch"].cpu())
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def restore_scaler(scaler: torch.amp.GradScaler, saved: dict | None) -> bool:
    """Load a checkpoint's GradScaler state only when both sides have one; True if it was loaded.

    Only fp16 autocast needs a scaler. A checkpoint written without one (CPU, fp32, bf16) holds ``{}``,
    and an enabled scaler refuses that (``load_state_dict({})`` raises), so an exact resume on a GPU
    that needs fp16 starts its scaler fresh (init scale, which the first steps calibrate); a scaler
    state resumed where no scaler is enabled is dropped. Everything else still resumes exactly."""
    if saved and scaler.is_enabled():
        scaler.load_state_dict(saved)
        return True
    if saved or scaler.is_enabled():
        logger.info("resume: the GradScaler state %s", "starts fresh (the checkpoint has none)" if scaler.is_enabled()
                    else "in the checkpoint is not used (no fp16 here)")
    return False


@dataclass
class Progress:
    step: int = 0
    epoch: int = 0  # epochs completed, all processes of this run (resume keeps it)
    batch_in_epoch: int = 0  # batches of the current epoch already trained (mid-epoch resume)
    best_val_loss: float = math.inf
    epochs_this_process: int = 0
    # epochs trained before this run's first process: the global epoch of the checkpoint a warm start
    # loaded (its curriculum goes on from there); an exact resume restores it
    epoch_offset: float = 0.0
    cpu_seconds: float = 0.0  # CPU time of this run's processes before this one (resume keeps it)
    # validations of the line: this run's, all processes, plus those of a warm start's source whose
    # weights it took whole (what the audio and intelligibility cadence counts, validate.py)
    validations: int = 0
    extra: dict = field(default_factory=dict)


class Trainer:
    def __init__(self, hp: HParams, device: torch.device, dist: DistInfo, mixed_precision: bool,
                 gradient_checkpointing: bool) -> None:
        self.hp, self.device, self.dist = hp, device, dist
        seed_everything(hp.seed)  # before the model is built: its initial weights come from torch's generator
        self.model = Tacotron2(ModelConfig.from_hparams(hp, gradient_checkpointing)).to(device)
        self.ddp = DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda" else None) \
            if dist.enabled else None
        self.opt = torch.optim.Adam(self.model.parameters(), lr=hp.learning_rate, weight_decay=hp.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(hp))
        self.amp_dtype = self._amp_dtype(mixed_precision)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.progress = Progress()
        self.cpu0 = time.process_time()  # cpu_minutes counts this process from here

    @property
    def cpu_minutes(self) -> float:
        """CPU time of the whole run so far (every process of an exact resume), in minutes."""
        return (self.progress.cpu_seconds + time.process_time() - self.cpu0) / 60

    def _amp_dtype(self, mixed_precision: bool) -> torch.dtype | None:
        if not mixed_precision or self.device.type != "cuda":
            return None  # fp32 on the CPU (bf16 autocast: 16% less CPU time end to end, benchmarks/README.md)
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    # -- schedules of the alignment aids -----------------------------------------------------
    def prior_weight(self) -> float:
        hp, s = self.hp, self.progress.step
        if hp.attention_prior_steps <= 0:
            return 0.0
        return hp.attention_prior_weight * max(0.0, 1.0 - s / hp.attention_prior_steps)

    def guided_weight(self) -> float:
        return self.hp.guided_attention_weight * 0.5 ** (self.progress.step / self.hp.guided_attention_decay_steps)

    # -- one step ----------------------------------------------------------------------------
    def _losses(self, batch: dict[str, torch.Tensor], train: bool) -> tuple[Losses, DecoderOutput, torch.Tensor]:
        hp = self.hp
        b = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        inputs = spectral_dropout(b["mels"], hp.spectral_dropout, hp.spectral_mask_width) if train else b["mels"]
        net = self.ddp if (train and self.ddp is not None) else self.model
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            out, post = net(b["text"], b["text_lens"], inputs, b["mel_lens"], self.prior_weight() if train else 0.0)
        losses = tacotron2_loss(
            out.mels.float(), post.float(), out.gates.float(), out.learned_alignments.float(), b["mels"],
            b["mel_lens"], b["text_lens"], hp.n_frames_per_step, hp.gate_pos_weight,
            self.guided_weight() if train else 0.0, hp.guided_attention_sigma,
            None if out.context_mels is None else out.context_mels.float(), hp.context_mel_loss_weight,
        )
        return losses, out, post

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        self.model.train()
        losses, _, _ = self._losses(batch, train=True)
        if any_rank(not bool(torch.isfinite(losses.total)), self.dist, self.device):  # all ranks skip, or none
            logger.warning("step %d: non-finite loss %s on this or another rank, skipping the update",
                           self.progress.step, losses.total.item())
            self.opt.zero_grad(set_to_none=True)
            self.progress.step += 1
            return {"train_loss": float("nan"), "grad_norm": float("nan"), "learning_rate": self.lr}
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(losses.total).backward()
        self.scaler.unscale_(self.opt)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.hp.grad_clip_thresh)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        self.progress.step += 1
        self.progress.batch_in_epoch += 1
        loss = all_reduce_mean(losses.total.detach(), self.dist)
        return {"train_loss": float(loss), "grad_norm": float(grad_norm), "learning_rate": self.lr,
                "guided_attention_loss": float(losses.guided.detach())}

    @property
    def lr(self) -> float:
        return float(self.opt.param_groups[0]["lr"])

    # -- state -------------------------------------------------------------------------------
    def state_dict(self, config_yaml: str) -> dict:
        p = self.progress
        return {
            "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(), "scaler": self.scaler.state_dict(),
            "step": p.step, "epoch": p.epoch, "batch_in_epoch": p.batch_in_epoch, "epoch_offset": p.epoch_offset,
            "validations": p.validations,
            "best_val_loss": p.best_val_loss, "cpu_seconds": p.cpu_seconds + time.process_time() - self.cpu0,
            "hparams": self.hp.to_dict(), "rng": rng_state(),
            "config": config_yaml, "format": "ttsops-tacotron2/1",
        }

    def load_state_dict(self, state: dict) -> None:
        """Exact resume: everything, so the continued run follows the same curve."""
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        steps_on_cpu(self.opt)
        self.sched.load_state_dict(state["scheduler"])
        restore_scaler(self.scaler, state.get("scaler"))
        self.cpu0 = time.process_time()
        self.progress = Progress(state["step"], state["epoch"], state.get("batch_in_epoch", 0),
                                 state.get("best_val_loss", math.inf), cpu_seconds=state.get("cpu_seconds", 0.0),
                                 epoch_offset=float(state.get("epoch_offset", 0.0)),
                                 validations=int(state.get("validations", 0)))
        set_rng_state(state["rng"])
