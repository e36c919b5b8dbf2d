"""How the Smart Tuner drives our train.py: its ``TrainerAdapter`` (smart_tuner/trainer/adapter.py).

Which hparams survive a warm restart (weights loaded, optimizer and epoch counter fresh):

| class | keys | why |
|---|---|---|
| run | epochs, val_every_epochs, val_every_steps, log_every_steps, n_audio_metric_clips, n_free_running_clips, audio_metrics_every, intelligibility_every, intelligibility_sentences, num_workers | how long / how often / what is measured, not what is learnt |
| safe | learning_rate, weight_decay, grad_clip_thresh, batch_size, dropout_*, variational_dropout, spectral_*, drop_frame_rate, lr_* schedule, gate_pos_weight, guided_attention_*, attention_prior_*, gate_threshold, max_decoder_steps | the optimisation changes, the weights still mean the same |
| architecture | ``ARCHITECTURE_KEYS`` minus the feature keys (encoder_embedding_dim, decoder_rnn_dim, ...) | tensor shapes change: train.py's ``--warm_start`` skips what no longer fits and names it |
| feature | ``FEATURE_KEYS`` (mel_fmax, mel_fmin, n_mel_channels, sample_rate, hop/win/filter_length) | the mel targets change meaning |
| data | seed, val_fraction, min_wav_seconds, max_wav_seconds | the train/validation split or the clips change |

The table is ``WARM_RESTART_CLASS``; a test checks that it classifies every HParams field, so a
new hparam cannot slip through unclassified. Values compare after HParams' own coercion
(``"0.001"`` equals ``1e-3``); a key a checkpoint does not record is the HParams default.
train.py names its newest checkpoint and its epoch in ``train_state.json`` (docs/train_contract.md),
and counts epochs in total across an exact resume.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

from ttsops.errors import ConfigError
from ttsops.smart_tuner.trainer.adapter import CommandAdapter
from ttsops.train.checkpoint import STATE, checkpoint_path
from ttsops.train.hparams import ARCHITECTURE_KEYS, FEATURE_KEYS, HParams

SAFE_KEYS = frozenset({
    "learning_rate", "weight_decay", "grad_clip_thresh", "batch_size", "dropout_prenet", "dropout_attention",
    "dropout_decoder", "variational_dropout", "spectral_dropout", "spectral_mask_width", "lr_warmup_steps",
    "lr_decay_start", "lr_decay_rate", "lr_decay_steps", "gate_pos_weight", "guided_attention_weight",
    "guided_attention_sigma", "guided_attention_decay_steps", "attention_prior_weight", "attention_prior_steps",
    "attention_prior_scaling", "gate_threshold", "max_decoder_steps", "drop_frame_rate",
})
RUN_KEYS = frozenset({"epochs", "val_every_epochs", "val_every_steps", "n_audio_metric_clips", "num_workers", "log_every_steps",
                      "n_free_running_clips", "audio_metrics_every", "intelligibility_every",
                      "intelligibility_sentences", "warm_start_optimizer"})
DATA_KEYS = frozenset({"seed", "val_fraction", "min_wav_seconds", "max_wav_seconds"})
WARM_RESTART_CLASS: dict[str, str] = {
    **{k: "run" for k in RUN_KEYS},
    **{k: "safe" for k in SAFE_KEYS},
    **{k: "data" for k in DATA_KEYS},
    **{k: "architecture" for k in ARCHITECTURE_KEYS - FEATURE_KEYS},
    **{k: "feature" for k in FEATURE_KEYS},  # n_mel_channels is both: the feature class wins
}


class Tacotron2Adapter(CommandAdapter):
    """train.py's hparams, restart classes and ``train_state.json``; the rest as the config says."""

    _defaults = HParams().to_dict()
    _known = frozenset(f.name for f in fields(HParams))

    def check_hparams(self, hparams: dict[str, Any]) -> None:
        """Raise ConfigError (naming the key) for a value train.py would refuse."""
        HParams().replace(**hparams)

    def restart_class(self, key: str) -> str:
        return WARM_RESTART_CLASS.get(key, "unknown")

    def normalise(self, key: str, value: Any) -> Any:
        if key not in self._known:
            return value
        try:
            return getattr(HParams().replace(**{key: value}), key)
        except ConfigError:
            return value  # a value HParams refuses is compared as is; train.py will name it

    def default(self, key: str) -> Any:
        return self._defaults.get(key)

    def latest_checkpoint(self, out_dir: Path) -> Path | None:
        """The checkpoint ``train_state.json`` names as the last one written, else the newest match."""
        last = (self.train_state(out_dir) or {}).get("last_checkpoint")
        if last:
            p = Path(last) if Path(last).is_absolute() else Path(out_dir) / last
            if p.is_file():
                return p
        return super().latest_checkpoint(out_dir)

    def checkpoint_at(self, out_dir: Path, step: int) -> Path | None:
        """train.py's checkpoint of global step ``step`` (it writes one at every validation), if still there."""
        p = checkpoint_path(out_dir, step)
        return p if p.is_file() else None

    def train_state(self, out_dir: Path) -> dict[str, Any] | None:
        try:
            data = json.loads((Path(out_dir) / STATE).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None
