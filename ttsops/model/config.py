"""The model's own configuration: ``ModelConfig`` (what Tacotron2 is built from) and the mel features it
predicts (``mel_config``), both read from a run's flat hparams.

Training composes them: ``ttsops.train.hparams.HParams`` carries these fields under their NVIDIA
names next to the training ones, and a checkpoint records them all (checkpoint.py), so the model
and the service rebuild a trained model without importing ``train``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from ttsops.audio.mel import MelConfig
from ttsops.text.frontend import text_frontend


@dataclass(frozen=True)
class ModelConfig:
    n_symbols: int
    n_mel_channels: int
    encoder_embedding_dim: int
    encoder_n_convolutions: int
    encoder_kernel_size: int
    attention_rnn_dim: int
    decoder_rnn_dim: int
    prenet_dim: int
    attention_dim: int
    attention_location_n_filters: int
    attention_location_kernel_size: int
    postnet_embedding_dim: int
    postnet_kernel_size: int
    postnet_n_convolutions: int
    n_frames_per_step: int
    max_decoder_steps: int
    gate_threshold: float
    dropout_prenet: float
    dropout_attention: float
    dropout_decoder: float
    variational_dropout: bool
    attention_prior_scaling: float
    text_frontend: str = "characters"  # characters | phonemes: sets the symbol table (n_symbols)
    drop_frame_rate: float = 0.0  # 1.0: the decoder never reads a frame (no feedback at inference)
    context_mel_loss_weight: float = 0.0  # > 0 adds the context -> mel head its loss trains
    gradient_checkpointing: bool = False

    @classmethod
    def from_hparams(cls, hp: Mapping[str, Any] | Any, gradient_checkpointing: bool = False) -> ModelConfig:
        """From a run's flat hparams (a mapping, or a dataclass such as train's ``HParams``) that
        name every field but ``n_symbols`` (the symbol table's size) and ``gradient_checkpointing``."""
        src = hp if isinstance(hp, Mapping) else asdict(hp)
        given = {f.name: src[f.name] for f in fields(cls) if f.name in src} | {
            "gradient_checkpointing": gradient_checkpointing}  # fields added later keep their defaults
        frontend = text_frontend(str(given.get("text_frontend", "characters")))
        return cls(n_symbols=len(frontend.symbols), **given)


def mel_config(hp: Mapping[str, Any]) -> MelConfig:
    """The mel features a run trained on, from its hparams' NVIDIA names."""
    return MelConfig(
        sample_rate=hp["sample_rate"], n_fft=hp["filter_length"], hop_length=hp["hop_length"],
        win_length=hp["win_length"], n_mels=hp["n_mel_channels"], fmin=hp["mel_fmin"], fmax=hp["mel_fmax"],
    )
