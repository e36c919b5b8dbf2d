"""Every hyperparameter of a training run, in one typed dataclass.

Names follow NVIDIA's Tacotron2 and SPEC §5 (``encoder_embedding_dim``, ``decoder_rnn_dim``,
``dropout_decoder``, ``grad_clip_thresh``, ``mel_fmax``, ``batch_size``, ``learning_rate``,
``weight_decay``). ``--hparams "k=v,k=v"`` and config ``training.hparams`` go through
``HParams.replace``, which rejects unknown names (listing close matches) and values of the wrong
type with one line. The resolved HParams are saved in every checkpoint.

``ARCHITECTURE_KEYS`` change tensor shapes (a warm start skips what no longer fits);
``FEATURE_KEYS`` change the mel features themselves (the mel cache and the decoder's targets).
"""

from __future__ import annotations

import difflib
import math
import typing
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from ttsops.audio.mel import MelConfig
from ttsops.errors import ConfigError
from ttsops.infra.kv import parse_hparams as parse_hparams_string
from ttsops.model.config import mel_config


@dataclass(frozen=True)
class HParams:
    # --- run ---
    epochs: int = 100
    seed: int = 1234
    val_every_epochs: int = 1
    # > 0: validate every N global steps (mid-epoch too) instead of every val_every_epochs epochs, and at
    # the end of the last epoch: on a small dataset (the demo: a few steps per epoch) the tuner's early-stop
    # detectors get the validations they need within a short generation
    val_every_steps: int = 0
    n_audio_metric_clips: int = 2  # val clips vocoded for mcd/pesq/stoi
    n_free_running_clips: int = 2  # val clips synthesised free-running for free_running_distance
    audio_metrics_every: int = 4  # mcd/pesq/stoi, images and audio every N-th validation of the line (and the last)
    intelligibility_every: int = 0  # asr_wer etc. every N-th validation and the last; 0: the last only; -1: never
    intelligibility_sentences: int = 10  # sentences of each held-out list spoken per intelligibility check
    # --- data / audio (FEATURE_KEYS) ---
    sample_rate: int = 22050
    n_mel_channels: int = 80
    filter_length: int = 1024
    hop_length: int = 256
    win_length: int = 1024
    mel_fmin: float = 0.0
    mel_fmax: float | None = 8000.0
    min_wav_seconds: float = 0.3
    max_wav_seconds: float = 12.0
    val_fraction: float = 0.05
    text_frontend: str = "characters"  # characters | phonemes (espeak-ng en-us IPA)
    # --- model (ARCHITECTURE_KEYS) ---
    encoder_embedding_dim: int = 512
    encoder_n_convolutions: int = 3
    encoder_kernel_size: int = 5
    attention_rnn_dim: int = 1024
    decoder_rnn_dim: int = 1024
    prenet_dim: int = 256
    attention_dim: int = 128
    attention_location_n_filters: int = 32
    attention_location_kernel_size: int = 31
    postnet_embedding_dim: int = 512
    postnet_kernel_size: int = 5
    postnet_n_convolutions: int = 5
    n_frames_per_step: int = 1
    max_decoder_steps: int = 1000
    gate_threshold: float = 0.5
    # --- regularisation ---
    dropout_prenet: float = 0.5
    dropout_attention: float = 0.1
    dropout_decoder: float = 0.1
    variational_dropout: bool = False  # one dropout mask per sequence on the decoder RNNs
    spectral_dropout: float = 0.0  # probability of a time and a frequency mask on decoder inputs
    spectral_mask_width: int = 8  # max frames / mel bands masked
    drop_frame_rate: float = 0.0  # share of teacher-forced decoder inputs replaced by the mean frame
    context_mel_loss_weight: float = 0.0  # auxiliary loss: the mel read off the attention context alone
    # --- alignment prior ---
    guided_attention_weight: float = 10.0
    guided_attention_sigma: float = 0.2
    guided_attention_decay_steps: int = 4000  # weight halves every this many steps
    attention_prior_weight: float = 0.8  # share of the beta-binomial prior mixed into the attention
    attention_prior_steps: int = 1500  # prior annealed linearly to 0 over these steps
    attention_prior_scaling: float = 1.0  # beta-binomial concentration (larger = sharper)
    # --- optimisation ---
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 1e-6
    grad_clip_thresh: float = 1.0
    lr_warmup_steps: int = 0
    lr_decay_start: int = 10000
    lr_decay_rate: float = 0.5  # x this every lr_decay_steps after lr_decay_start
    lr_decay_steps: int = 10000
    gate_pos_weight: float = 5.0
    # a --warm_start whose tensors all fit also takes the checkpoint's Adam moments (the new learning
    # rate and weight decay apply): a fresh optimizer's first steps shake every weight by ~lr
    warm_start_optimizer: bool = True
    num_workers: int = 0
    log_every_steps: int = 10

    def replace(self, **changes: Any) -> HParams:
        known = {f.name: f for f in fields(self)}
        hints = typing.get_type_hints(HParams)
        coerced = {}
        for key, value in changes.items():
            if key not in known:
                close = difflib.get_close_matches(key, known, n=3)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise ConfigError(f"unknown hparam {key!r}{hint}")
            coerced[key] = _coerce(key, value, hints[key])
            _check_range(key, coerced[key])
        return replace(self, **coerced)

    def with_string(self, spec: str | None) -> HParams:
        """Apply NVIDIA-style ``"k=v,k=v"`` overrides."""
        return self.replace(**parse_hparams_string(spec))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def mel(self) -> MelConfig:
        return mel_config(self.to_dict())


ARCHITECTURE_KEYS = frozenset({
    "encoder_embedding_dim", "encoder_n_convolutions", "encoder_kernel_size", "attention_rnn_dim",
    "decoder_rnn_dim", "prenet_dim", "attention_dim", "attention_location_n_filters",
    "attention_location_kernel_size", "postnet_embedding_dim", "postnet_kernel_size",
    "postnet_n_convolutions", "n_frames_per_step", "n_mel_channels", "text_frontend",
    "context_mel_loss_weight",
})
FEATURE_KEYS = frozenset({
    "sample_rate", "n_mel_channels", "filter_length", "hop_length", "win_length", "mel_fmin",
    "mel_fmax",
})


_ALLOWED: dict[str, tuple[str, ...]] = {"text_frontend": ("characters", "phonemes")}
_POSITIVE_INTS = (  # a 0 divides by zero, makes an empty range or a tensor with no size
    "batch_size", "val_every_epochs", "log_every_steps", "lr_decay_steps", "guided_attention_decay_steps",
    "n_frames_per_step", "max_decoder_steps", "sample_rate", "n_mel_channels", "filter_length", "hop_length",
    "win_length", "encoder_embedding_dim", "encoder_n_convolutions", "encoder_kernel_size", "attention_rnn_dim",
    "decoder_rnn_dim", "prenet_dim", "attention_dim", "attention_location_n_filters",
    "attention_location_kernel_size", "postnet_embedding_dim", "postnet_kernel_size", "postnet_n_convolutions",
    "spectral_mask_width",
)
_NON_NEGATIVE = ("epochs", "val_every_steps", "n_audio_metric_clips", "num_workers", "lr_warmup_steps", "lr_decay_start",
                 "learning_rate", "weight_decay", "grad_clip_thresh", "attention_prior_steps", "mel_fmin",
                 "min_wav_seconds", "gate_pos_weight", "guided_attention_weight", "guided_attention_sigma",
                 "attention_prior_scaling")
_FRACTIONS = ("dropout_prenet", "dropout_attention", "dropout_decoder", "spectral_dropout", "val_fraction",
              "lr_decay_rate", "attention_prior_weight", "gate_threshold")
_RANGES: dict[str, tuple[float, float]] = {
    **{k: (1, math.inf) for k in _POSITIVE_INTS}, **{k: (0.0, math.inf) for k in _NON_NEGATIVE},
    **{k: (0.0, 1.0) for k in _FRACTIONS},
    "drop_frame_rate": (0.0, 1.0), "context_mel_loss_weight": (0.0, math.inf), "n_free_running_clips": (0, math.inf),
    "audio_metrics_every": (1, math.inf), "intelligibility_every": (-1, math.inf),
    "intelligibility_sentences": (1, 20),
}


def _check_range(key: str, value: Any) -> None:
    """One line for a value outside what the key allows (for the keys in ``_ALLOWED`` and ``_RANGES``)."""
    if key in _ALLOWED and value not in _ALLOWED[key]:
        raise ConfigError(f"hparam {key}={value!r}: expected one of {', '.join(_ALLOWED[key])}")
    if key in _RANGES and value is not None and not _RANGES[key][0] <= value <= _RANGES[key][1]:
        lo, hi = _RANGES[key]
        raise ConfigError(f"hparam {key}={value!r}: expected a value in [{lo:g}, {hi:g}]")


def _coerce(key: str, value: Any, hint: Any) -> Any:
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint)
    if isinstance(value, str):
        text = value.strip()
        if optional and text.lower() in ("none", "null", ""):
            return None
        try:
            if base is bool:
                if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return text.lower() in ("true", "1", "yes")
            if base is int:
                f = float(text)
                if f != int(f):
                    raise ValueError
                return int(f)
            return base(text)
        except ValueError:
            raise ConfigError(
                f"hparam {key}={value!r}: expected {getattr(base, '__name__', base)}"
            ) from None
    if value is None and optional:
        return None
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if base is int and isinstance(value, float) and value == int(value):
        return int(value)
    if not isinstance(value, base) or (base is int and isinstance(value, bool)):
        raise ConfigError(f"hparam {key}={value!r}: expected {getattr(base, '__name__', base)}")
    return value
