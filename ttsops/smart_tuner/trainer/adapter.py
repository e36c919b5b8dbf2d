"""The trainer adapter contract: everything the tuner knows about a trainer beyond its command line.

The tuner is trainer-agnostic. The config's ``adapter`` section says how to start a trainer (the
command template, the flags, where its metrics are); a ``TrainerAdapter`` says the rest:

* how hparams are encoded for ``--hparams`` (``hparams_string``);
* which hparams survive a warm restart (``restart_class``: ``run``, ``safe``, ``architecture``,
  ``feature``, ``data``, or ``unknown``; see search/param_scheduler.py for what each means), and how
  the trainer reads a value (``normalise``) and what it assumes when a checkpoint does not record a
  key (``default``), so a plan compares values as the trainer would;
* where its newest checkpoint is and what it says about its run (``latest_checkpoint``,
  ``train_state``: a trainer that reports its epoch counts epochs in total across a resume), and
  which checkpoint it wrote at a validation's global step (``checkpoint_at``; None: not known), so a
  generation can keep its best validation's state (trainer/kept.py).

``CommandAdapter`` knows nothing beyond the config: every hparam but ``epochs`` is ``unknown``
(a change warm-starts, and the plan says so), values compare as they are, the newest file
matching ``checkpoint_glob`` is the latest checkpoint, ``step_checkpoint`` names the one of a
step. Our Tacotron2 adapter lives with the
trainer it describes (``ttsops.train.adapter``); the tuner never imports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from ttsops.config import AdapterConfig
from ttsops.infra.kv import format_hparams

RESTART_CLASSES = ("run", "safe", "architecture", "feature", "data", "unknown")


class TrainerAdapter(Protocol):
    def check_hparams(self, hparams: dict[str, Any]) -> None: ...  # ConfigError for a value it refuses
    def hparams_string(self, hparams: Mapping[str, Any]) -> str: ...
    def restart_class(self, key: str) -> str: ...
    def normalise(self, key: str, value: Any) -> Any: ...
    def default(self, key: str) -> Any: ...
    def latest_checkpoint(self, out_dir: Path) -> Path | None: ...
    def checkpoint_at(self, out_dir: Path, step: int) -> Path | None: ...
    def train_state(self, out_dir: Path) -> dict[str, Any] | None: ...


class CommandAdapter:
    """A trainer known only through the config's ``adapter`` section."""

    def __init__(self, cfg: AdapterConfig | None = None) -> None:
        self.cfg = cfg or AdapterConfig()

    def check_hparams(self, hparams: dict[str, Any]) -> None:
        return None  # the trainer itself refuses what it cannot read

    def hparams_string(self, hparams: Mapping[str, Any]) -> str:
        return format_hparams(hparams)

    def restart_class(self, key: str) -> str:
        return "run" if key == "epochs" else "unknown"  # the tuner itself sets epochs per generation

    def normalise(self, key: str, value: Any) -> Any:
        return value

    def default(self, key: str) -> Any:
        return None

    def latest_checkpoint(self, out_dir: Path) -> Path | None:
        """The newest file matching ``checkpoint_glob`` (half-written temp files never match a glob
        ending in the checkpoint's suffix)."""
        found = []
        for p in Path(out_dir).glob(self.cfg.checkpoint_glob):
            try:
                found.append((p.stat().st_mtime_ns, p.name, p))
            except OSError:  # rotated away while we looked
                continue
        return max(found)[2] if found else None

    def checkpoint_at(self, out_dir: Path, step: int) -> Path | None:
        """The file ``step_checkpoint`` names for ``step``, if it is there (None without a template)."""
        if self.cfg.step_checkpoint is None:
            return None
        p = Path(out_dir) / self.cfg.step_checkpoint.format(step=step)
        return p if p.is_file() else None

    def train_state(self, out_dir: Path) -> dict[str, Any] | None:
        return None
