"""The checkpoint a generation keeps: the one its trainer wrote at the generation's best validation.

A generation's objective goes up and down (a learning rate that is too high for the checkpoint it
continues, alignment lost and found, validation noise). Its value used to be the objective at its
last validation and its checkpoint the final one, so a generation that reached 3.49 and ended at
5.85 handed 5.85 on. Now, as soon as a validation is the generation's best so far, the runner asks
the adapter for the checkpoint written at that validation's global step (``checkpoint_at``; train.py
writes one at every validation, a foreign trainer through ``adapter.step_checkpoint``) and keeps it as
``<gen_dir>/kept/best_validation<suffix>``: a hard link (a copy where the file system has none), so
the trainer's rotation (``keep_n_checkpoints``) cannot delete it, replaced atomically. A trainer's
``train_state.json`` that describes that same step is kept beside it with ``last_checkpoint``
pointing at the kept file, so an exact resume from it (another host, the registry's pull, the
tuner's epoch base) restores the right epoch counter. The trainer logs a validation's metrics
before it writes that checkpoint and its state, so the runner tries again at every poll until both
are there; a step whose checkpoint was rotated away or whose state was overwritten by a later
validation before the runner saw it is given up (the earlier kept one stays).

A generation that completes then reports the kept validation: its objective is the generation's
value (what Optuna is told, what ``best_model.pt`` and the registry record), its metrics the
generation's metrics, the kept file its checkpoint, so the value always measures the weights handed
on. Without ``checkpoint_at`` (``step_checkpoint: null``) or when no validation could be kept, the
generation keeps its last validation and final checkpoint, as before. A pruned generation keeps its
last validation (its value is informational; it never becomes the best).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttsops.infra.atomic import atomic_link, atomic_write_json
from ttsops.registry.model_registry import TRAIN_STATE

logger = logging.getLogger(__name__)
KEPT_DIR = "kept"
KEPT_STEM = "best_validation"


@dataclass(frozen=True)
class Validation:
    index: int  # 1-based, among this generation's validations
    rows: int  # how many validation rows this process of the runner had seen (alignment held up to it)
    step: int  # the trainer's global step
    value: float
    metrics: dict[str, float]


@dataclass(frozen=True)
class Kept:
    validation: Validation
    path: Path


class KeptCheckpoint:
    """Keeps the checkpoint of a generation's best validation as it trains (see the module doc)."""

    def __init__(self, gen_dir: Path, checkpoint_at: Callable[[Path, int], Path | None],
                 train_state: Callable[[Path], dict[str, Any] | None]) -> None:
        self.gen_dir = Path(gen_dir)
        self._checkpoint_at, self._train_state = checkpoint_at, train_state
        self.pending: Validation | None = None
        self.kept: Kept | None = None

    def offer(self, v: Validation) -> None:
        """A validation just reported; keep its checkpoint if it beats the one kept (or about to be)."""
        bar = self.pending.value if self.pending else self.kept.validation.value if self.kept else math.inf
        if math.isfinite(v.value) and v.value < bar:
            self.pending = v
            self.try_keep()

    def try_keep(self) -> None:
        v = self.pending
        if v is None:
            return
        state = self._train_state(self.gen_dir)
        state_step = state.get("step") if isinstance(state, dict) else None
        if isinstance(state_step, int) and state_step > v.step:  # overwritten by a later validation
            self._give_up(v, f"its train state already describes step {state_step}")
            return
        src = self._checkpoint_at(self.gen_dir, v.step)
        if src is None or (state is not None and state_step != v.step):
            return  # not written yet: the next poll looks again
        try:
            dst = self._link(src)
        except FileNotFoundError:  # rotated away between the look and the link
            self._give_up(v, "its checkpoint was rotated away")
            return
        if state is not None:
            atomic_write_json(dst.parent / TRAIN_STATE, {**state, "last_checkpoint": str(dst), "best_checkpoint": str(dst)})
        else:
            (dst.parent / TRAIN_STATE).unlink(missing_ok=True)  # an earlier kept step's state no longer applies
        self.kept, self.pending = Kept(v, dst), None

    def _link(self, src: Path) -> Path:
        kept = self.gen_dir / KEPT_DIR
        kept.mkdir(exist_ok=True)
        return atomic_link(src, kept / f"{KEPT_STEM}{src.suffix}")

    def _give_up(self, v: Validation, why: str) -> None:
        logger.info("%s: validation %d (step %d, objective %.5g) not kept: %s", self.gen_dir.name, v.index, v.step,
                    v.value, why)
        self.pending = None
