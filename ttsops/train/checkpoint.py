"""Checkpoints: atomic writes, rotation (keep N newest + the best), exact resume, warm start.

What a checkpoint holds and how it is read is the model's (``ttsops.model.checkpoint``); this is
the training side: writing, rotating, and loading the weights that still fit.

A checkpoint is never half-written: it is saved to a temp file in the same directory, fsynced and
renamed over the target (rename is atomic on POSIX), so a SIGKILL at any moment leaves either the
old file or the new one.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ttsops.infra.atomic import atomic_copy, atomic_write

logger = logging.getLogger(__name__)
CKPT_RE = re.compile(r"checkpoint_(\d{8})\.pt$")
BEST = "checkpoint_best.pt"
STATE = "train_state.json"


def checkpoint_path(out_dir: str | Path, step: int) -> Path:
    """Where train.py writes the checkpoint of global step ``step`` (the tuner's adapter reads it too)."""
    return Path(out_dir) / f"checkpoint_{step:08d}.pt"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    return atomic_write(path, lambda f: torch.save(state, f))


def warm_start(model: nn.Module, weights: dict[str, torch.Tensor]) -> list[str]:
    """Load the tensors that fit; return the names skipped (shape changed, missing, or unexpected)."""
    own = model.state_dict()
    fit = {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(
        [f"{k} {tuple(v.shape)}->{tuple(own[k].shape)}" for k, v in weights.items() if k in own and k not in fit]
        + [f"{k} (not in model)" for k in weights if k not in own]
        + [f"{k} (not in checkpoint)" for k in own if k not in weights]
    )
    own.update(fit)
    model.load_state_dict(own)
    return skipped


def carry_optimizer_state(opt: torch.optim.Optimizer, saved: dict[str, Any] | None) -> bool:
    """Load a checkpoint's optimizer state (Adam's moments and step counts) into ``opt`` but keep
    ``opt``'s hyperparameters (learning rate, weight decay, the scheduler's ``initial_lr``): a warm
    start whose tensors all fit then continues the optimisation instead of restarting it, as PBT's
    exploit copies the optimizer with the weights. False (nothing changed) if the state does not fit."""
    if not saved or len(saved.get("param_groups", ())) != len(opt.param_groups):
        return False
    own = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    before = opt.state_dict()
    try:
        opt.load_state_dict(saved)
        fits = all(
            t.shape == p.shape
            for g in opt.param_groups for p in g["params"]
            for t in opt.state.get(p, {}).values() if isinstance(t, torch.Tensor) and t.dim() > 0
        )
    except (ValueError, KeyError, RuntimeError):
        fits = False
    if not fits:
        opt.load_state_dict(before)
        return False
    for group, settings in zip(opt.param_groups, own, strict=True):
        group.update(settings)
    steps_on_cpu(opt)
    return True


def steps_on_cpu(opt: torch.optim.Optimizer) -> None:
    """Adam's step counts where Adam keeps them: on the CPU unless capturable or fused. A checkpoint
    loaded with ``map_location="cuda"`` puts them on the GPU, and then every step reads each back
    (``.item()``): a host sync per parameter."""
    for group in opt.param_groups:
        if group.get("capturable") or group.get("fused"):
            continue
        for p in group["params"]:
            st = opt.state.get(p)
            if st and isinstance(st.get("step"), torch.Tensor) and st["step"].device.type != "cpu":
                st["step"] = st["step"].cpu()


class CheckpointManager:
    """Writes ``checkpoint_<step>.pt``, keeps the ``keep_n`` newest plus ``checkpoint_best.pt``."""

    def __init__(self, out_dir: str | Path, keep_n: int) -> None:
        self.dir = Path(out_dir)
        self.keep_n = keep_n
        self.dir.mkdir(parents=True, exist_ok=True)

    def save(self, step: int, state: dict[str, Any], is_best: bool) -> Path:
        path = save_checkpoint(checkpoint_path(self.dir, step), state)
        if is_best:
            atomic_copy(path, self.dir / BEST)
        self._rotate()
        return path

    def _rotate(self) -> None:
        ckpts = sorted(p for p in self.dir.glob("checkpoint_*.pt") if CKPT_RE.search(p.name))
        for old in ckpts[: -self.keep_n]:
            old.unlink(missing_ok=True)

    def latest(self) -> Path | None:
        ckpts = sorted(p for p in self.dir.glob("checkpoint_*.pt") if CKPT_RE.search(p.name))
        return ckpts[-1] if ckpts else None

    @property
    def best(self) -> Path | None:
        p = self.dir / BEST
        return p if p.exists() else None
