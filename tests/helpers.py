"""Helpers shared by tests across packages: the tiny model (configs/tiny.yaml), train.py as a
subprocess, a free local port. Fixtures live in the conftest.py of the package that needs them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from ttsops.config import load_config
from ttsops.infra.kv import format_hparams

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "configs" / "tiny.yaml"

# The tiny model every training test uses: trains a step in well under a second on one core.
TINY: dict[str, Any] = dict(load_config(TINY_CONFIG).training.hparams)
TINY_RESOURCES: dict[str, Any] = load_config(TINY_CONFIG).resources.model_dump(exclude={"checkpointing"})
TINY_HPARAMS = format_hparams(TINY)  # the same as train.py's --hparams


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


PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


@contextmanager
def fresh_postgres_database(prefix: str, purpose: str) -> Iterator[str]:
    """A new PostgreSQL database on 127.0.0.1:5432 for one test (dropped afterwards); skips, saying
    how to start PostgreSQL, when none is reachable."""
    psycopg2 = pytest.importorskip("psycopg2")
    try:
        admin = psycopg2.connect(PG_ADMIN, connect_timeout=3)
    except psycopg2.OperationalError:
        pytest.skip(
            "PostgreSQL not reachable at 127.0.0.1:5432 (start it, e.g. `service postgresql start`, "
            f"trust auth, database 'test') to run {purpose}"
        )
    admin.autocommit = True
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
