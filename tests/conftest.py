"""Shared test set-up: keep third-party tools offline and quiet, and everything under tmp_path."""

from __future__ import annotations

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.alert_stub import Stub


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """Twelve flite clips in LJSpeech layout, made once per test session."""
    if shutil.which("flite") is None:
        pytest.fail("flite is not installed: run scripts/setup.sh (apt-get install flite)")
    from ttsops.data.corpus import synth_corpus

    return synth_corpus(tmp_path_factory.mktemp("tiny_dataset"), n=12, seed=3, progress=False)


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated MLflow SQLite store (creating one takes 10-16 s here; copying, ms)."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_uri(tmp_path: Path, mlflow_template: Path) -> str:
    """A fresh MLflow store for one test: ``sqlite:///<tmp_path>/mlflow.db``."""
    shutil.copyfile(mlflow_template, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def stub() -> Iterator[Stub]:
    """A fake Telegram/Slack/webhook server on 127.0.0.1 that records every request."""
    s = Stub()
    yield s
    s.close()
