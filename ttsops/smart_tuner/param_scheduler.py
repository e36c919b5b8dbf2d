"""ParamScheduler: the ``--hparams`` string for the next generation and how to restart it.

Which hparams survive a warm restart (weights loaded, optimizer and epoch counter fresh):

| class | keys | a change means | plan |
|---|---|---|---|
| run | epochs, val_every_epochs, log_every_steps, n_audio_metric_clips, num_workers | how long / how often, not what is learnt | ignored: resume stays possible |
| safe | learning_rate, weight_decay, grad_clip_thresh, batch_size, dropout_*, variational_dropout, spectral_*, lr_* schedule, gate_pos_weight, guided_attention_*, attention_prior_*, gate_threshold, max_decoder_steps | the optimisation changes, the weights still mean the same | warm_start |
| architecture | ``ARCHITECTURE_KEYS`` minus the feature keys (encoder_embedding_dim, decoder_rnn_dim, ...) | tensor shapes change | warm_start: tensors whose shape changed are skipped (re-initialised) and named in train.py's log; or fresh if configured |
| feature | ``FEATURE_KEYS`` (mel_fmax, mel_fmin, n_mel_channels, sample_rate, hop/win/filter_length) | the mel targets change meaning; old weights predict the wrong features | fresh; a warm start is allowed by config, and the plan says why it is risky |
| data | seed, val_fraction, min_wav_seconds, max_wav_seconds | the train/validation split or the clips change | warm_start, but the reason warns that objectives are no longer comparable |

Nothing (or only run keys) changed -> ``resume`` (``--checkpoint_path``: exact resume, the same curve continues).
No checkpoint yet -> ``fresh``. The table is ``WARM_RESTART_CLASS``; a test checks that it
classifies every HParams field, so a new hparam cannot slip through unclassified.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from ttsops.errors import ConfigError
from ttsops.train.hparams import ARCHITECTURE_KEYS, FEATURE_KEYS, HParams

logger = logging.getLogger(__name__)

Mode = Literal["resume", "warm_start", "fresh"]
SAFE_KEYS = frozenset(
    {
        "learning_rate",
        "weight_decay",
        "grad_clip_thresh",
        "batch_size",
        "dropout_prenet",
        "dropout_attention",
        "dropout_decoder",
        "variational_dropout",
        "spectral_dropout",
        "spectral_mask_width",
        "lr_warmup_steps",
        "lr_decay_start",
        "lr_decay_rate",
        "lr_decay_steps",
        "gate_pos_weight",
        "guided_attention_weight",
        "guided_attention_sigma",
        "guided_attention_decay_steps",
        "attention_prior_weight",
        "attention_prior_steps",
        "attention_prior_scaling",
        "gate_threshold",
        "max_decoder_steps",
    }
)
RUN_KEYS = frozenset(
    {
        "epochs",
        "val_every_epochs",
        "n_audio_metric_clips",
        "num_workers",
        "log_every_steps",
    }
)
DATA_KEYS = frozenset({"seed", "val_fraction", "min_wav_seconds", "max_wav_seconds"})
WARM_RESTART_CLASS: dict[str, str] = {
    **{k: "run" for k in RUN_KEYS},
    **{k: "safe" for k in SAFE_KEYS},
    **{k: "data" for k in DATA_KEYS},
    **{k: "architecture" for k in ARCHITECTURE_KEYS - FEATURE_KEYS},
    **{k: "feature" for k in FEATURE_KEYS},  # n_mel_channels is both: the feature class wins
}


@dataclass(frozen=True)
class RestartPlan:
    mode: Mode
    checkpoint: Path | None
    changed: tuple[str, ...]  # hparams that differ from the checkpoint's
    reason: str


class ParamScheduler:
    """Builds ``--hparams`` strings and decides resume / warm_start / fresh for a generation.

    ``base_hparams`` (config ``training.hparams``) are included in every string, overridden by
    the trial's params. ``on_architecture_change`` and ``on_feature_change`` pick the plan for
    those classes ("warm_start" or "fresh").
    """

    def __init__(
        self,
        base_hparams: dict[str, Any] | None = None,
        *,
        on_architecture_change: Literal["warm_start", "fresh"] = "warm_start",
        on_feature_change: Literal["warm_start", "fresh"] = "fresh",
    ) -> None:
        self.base_hparams = dict(base_hparams or {})
        self.on_architecture_change = on_architecture_change
        self.on_feature_change = on_feature_change

    def merged(self, params: dict[str, Any]) -> dict[str, Any]:
        return {**self.base_hparams, **params}

    def hparams_string(self, params: dict[str, Any]) -> str:
        """``"k=v,k=v"`` of base hparams + params, sorted by key; None -> ``null``."""
        return ",".join(f"{k}={format_value(k, v)}" for k, v in sorted(self.merged(params).items()))

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
            )
        changed = changed_keys(self.merged(new_params), checkpoint_hparams)
        by_class: dict[str, list[str]] = {}
        for key in changed:
            by_class.setdefault(WARM_RESTART_CLASS.get(key, "unknown"), []).append(key)
        if set(by_class) <= {"run"}:
            note = f" (run length changed: {', '.join(changed)})" if changed else ""
            return RestartPlan(
                "resume", checkpoint, changed, f"same hparams as the checkpoint: exact resume{note}"
            )
        mode, reason = self._decide(by_class)
        return RestartPlan(mode, None if mode == "fresh" else checkpoint, changed, reason)

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


def format_value(key: str, value: Any) -> str:
    """One value as train.py's parser reads it back (floats round-trip exactly)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    if any(c in text for c in ",="):
        raise ConfigError(f"hparam {key}={text!r}: values cannot contain ',' or '='")
    return text


def changed_keys(new: dict[str, Any], old: dict[str, Any]) -> tuple[str, ...]:
    """Keys of ``new`` whose value differs from ``old`` after HParams type coercion.

    A key absent from ``old`` counts as the HParams default there (older checkpoints may not
    store every field); a key HParams does not know is compared as is.
    """
    defaults = HParams().to_dict()
    known = {f.name for f in fields(HParams)}
    out = []
    for key in sorted(new):
        before = old.get(key, defaults.get(key))
        if key in known:
            after_c, before_c = _coerce(key, new[key]), _coerce(key, before)
        else:
            after_c, before_c = new[key], before
        if after_c != before_c:
            out.append(key)
    return tuple(out)


def _coerce(key: str, value: Any) -> Any:
    try:
        return getattr(HParams().replace(**{key: value}), key)
    except ConfigError:
        return value  # a value HParams refuses is compared as is; train.py will name it
