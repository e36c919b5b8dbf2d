"""ParamScheduler: the ``--hparams`` string for the next generation and how to restart it.

The trainer's ``TrainerAdapter`` (trainer/adapter.py) puts each hparam in a warm-restart class;
the plan follows the classes of the keys that changed against the checkpoint's hparams:

| class | a change means | plan |
|---|---|---|
| run | how long / how often, not what is learnt (epochs, ...) | ignored: resume stays possible |
| safe | the optimisation changes, the weights still mean the same (learning_rate, dropout_*, ...) | warm_start |
| architecture | tensor shapes change (encoder_embedding_dim, ...) | warm_start: tensors whose shape changed are skipped (re-initialised) and named in the trainer's log; or fresh if configured |
| feature | the inputs/targets change meaning (mel_fmax, ...); old weights predict the wrong features | fresh; a warm start is allowed by config, and the plan says why it is risky |
| data | the train/validation split or the clips change | warm_start, but the reason warns that objectives are no longer comparable |
| unknown | the adapter does not know the key | warm_start, and the reason names the keys |

Nothing (or only run keys) changed -> ``resume`` (``--checkpoint_path``: exact resume, the same curve continues).
No checkpoint yet -> ``fresh``. Our train.py's table is ``ttsops.train.adapter.WARM_RESTART_CLASS``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ttsops.smart_tuner.trainer.adapter import CommandAdapter, TrainerAdapter

logger = logging.getLogger(__name__)

Mode = Literal["resume", "warm_start", "fresh"]


# restart classes after which the checkpoint's weights mean the same in the new run
KEEPS_WEIGHTS = frozenset({"run", "safe", "data"})


@dataclass(frozen=True)
class RestartPlan:
    mode: Mode
    checkpoint: Path | None
    changed: tuple[str, ...]  # hparams that differ from the checkpoint's
    reason: str
    # the run starts from the checkpoint with its weights whole: only ``KEEPS_WEIGHTS`` classes changed
    # (or the checkpoint's hparams are unknown, so no change is known)
    keeps_weights: bool = False


class ParamScheduler:
    """Builds ``--hparams`` strings and decides resume / warm_start / fresh for a generation.

    ``base_hparams`` (config ``training.hparams``) are included in every string, overridden by
    the trial's params. ``trainer`` encodes and classifies the hparams (a ``CommandAdapter``, which
    knows no classes, by default). ``on_architecture_change`` and ``on_feature_change`` pick the
    plan for those classes ("warm_start" or "fresh").
    """

    def __init__(
        self,
        base_hparams: dict[str, Any] | None = None,
        *,
        trainer: TrainerAdapter | None = None,
        on_architecture_change: Literal["warm_start", "fresh"] = "warm_start",
        on_feature_change: Literal["warm_start", "fresh"] = "fresh",
    ) -> None:
        self.base_hparams = dict(base_hparams or {})
        self.trainer: TrainerAdapter = trainer or CommandAdapter()
        self.on_architecture_change = on_architecture_change
        self.on_feature_change = on_feature_change

    def merged(self, params: dict[str, Any]) -> dict[str, Any]:
        return {**self.base_hparams, **params}

    def hparams_string(self, params: dict[str, Any]) -> str:
        """Base hparams + params as the trainer reads them (``"k=v,k=v"`` for train.py)."""
        return self.trainer.hparams_string(self.merged(params))

    def plan(
        self, new_params: dict[str, Any], checkpoint: Path | None, checkpoint_hparams: dict[str, Any] | None
    ) -> RestartPlan:
        if checkpoint is None:
            return RestartPlan("fresh", None, (), "no checkpoint yet: train from scratch")
        checkpoint = Path(checkpoint)
        if checkpoint_hparams is None:
            return RestartPlan(
                "warm_start",
                checkpoint,
                (),
                "checkpoint hparams unknown: warm start, tensors that do not fit are skipped",
                keeps_weights=True,
            )
        changed = changed_keys(self.merged(new_params), checkpoint_hparams, self.trainer)
        by_class: dict[str, list[str]] = {}
        for key in changed:
            by_class.setdefault(self.trainer.restart_class(key), []).append(key)
        if set(by_class) <= {"run"}:
            note = f" (run length changed: {', '.join(changed)})" if changed else ""
            return RestartPlan(
                "resume", checkpoint, changed, f"same hparams as the checkpoint: exact resume{note}", keeps_weights=True
            )
        mode, reason = self._decide(by_class)
        whole = mode != "fresh" and set(by_class) <= KEEPS_WEIGHTS
        return RestartPlan(mode, None if mode == "fresh" else checkpoint, changed, reason, keeps_weights=whole)

    def _decide(self, by_class: dict[str, list[str]]) -> tuple[Mode, str]:
        notes = []
        if "feature" in by_class:
            keys = ", ".join(by_class["feature"])
            if self.on_feature_change == "fresh":
                return (
                    "fresh",
                    f"feature hparams changed ({keys}): the mels change meaning, train from scratch",
                )
            notes.append(
                f"RISKY: feature hparams changed ({keys}), the weights were trained on "
                "different mels; warm start as configured"
            )
        if "architecture" in by_class:
            keys = ", ".join(by_class["architecture"])
            if self.on_architecture_change == "fresh":
                return "fresh", f"architecture hparams changed ({keys}): train from scratch as configured"
            notes.append(
                f"architecture hparams changed ({keys}): tensors whose shape changed "
                "are skipped and re-initialised"
            )
        if "data" in by_class:
            notes.append(
                f"data hparams changed ({', '.join(by_class['data'])}): the validation "
                "set changes, objectives are not comparable with earlier generations"
            )
        if "unknown" in by_class:
            notes.append(f"hparams not in the warm-restart table ({', '.join(by_class['unknown'])})")
        if "safe" in by_class:
            notes.append(f"warm-restart-safe hparams changed ({', '.join(by_class['safe'])})")
        return "warm_start", "; ".join(notes)


def changed_keys(new: dict[str, Any], old: dict[str, Any], trainer: TrainerAdapter) -> tuple[str, ...]:
    """Keys of ``new`` whose value differs from ``old`` as the trainer reads them.

    A key absent from ``old`` counts as the trainer's default there (older checkpoints may not
    store every field); a key the trainer does not know is compared as is.
    """
    out = []
    for key in sorted(new):
        before = old[key] if key in old else trainer.default(key)
        if trainer.normalise(key, new[key]) != trainer.normalise(key, before):
            out.append(key)
    return tuple(out)
