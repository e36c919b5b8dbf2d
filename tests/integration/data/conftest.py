from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def synth_cache(tmp_path_factory) -> Path:
    """Synthesised utterances, shared by every data-plane test of the session."""
    return tmp_path_factory.mktemp("synth_cache")
