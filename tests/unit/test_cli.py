"""The command line's process set-up (ttsops/cli.py)."""

from __future__ import annotations

import logging

import pytest

from ttsops.cli import configure_logging


@pytest.fixture(autouse=True)
def _restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:], root.level = handlers, level


def test_mlflows_per_artifact_progress_bars_are_off_unless_the_user_asked(monkeypatch):
    from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR

    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    configure_logging()
    assert MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.get() is False
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "true")
    configure_logging()
    assert MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.get() is True
