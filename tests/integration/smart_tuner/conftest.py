"""Fixtures for the tuner's integration tests (helpers in fixtures/tuner_testkit.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 flite clips in LJSpeech layout, made once per session (the real train.py's dataset)."""
    if shutil.which("flite") is None:
        pytest.skip("flite is not installed (apt-get install flite): the real-trainer tests synthesise with it")
    from ttsops.data.corpus import synth_corpus

    return Path(synth_corpus(tmp_path_factory.mktemp("corpus") / "data", n=16, seed=0, progress=False, workers=1))
