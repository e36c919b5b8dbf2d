"""Helpers shared by tests that run train.py as a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The tiny model every training test uses: trains a step in well under a second on one core.
TINY_HPARAMS = (
    "encoder_embedding_dim=32,attention_rnn_dim=64,decoder_rnn_dim=64,prenet_dim=32,attention_dim=16,"
    "postnet_embedding_dim=32,postnet_n_convolutions=2,n_frames_per_step=3,batch_size=4,max_decoder_steps=40,"
    "val_fraction=0.15,n_audio_metric_clips=1,log_every_steps=1"
)


def read_train_state(out_dir: Path) -> dict | None:
    """train.py's ``train_state.json`` in ``out_dir`` (None until it writes one)."""
    from ttsops.train.adapter import Tacotron2Adapter

    return Tacotron2Adapter().train_state(out_dir)


def train_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "ttsops.train", *args]


def run_train(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(train_cmd(*args), capture_output=True, text=True, timeout=timeout, cwd=REPO, env=full_env)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for servers the test starts itself)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
