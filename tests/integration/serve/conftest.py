"""Fixtures for the service tests (helpers in serve_helpers.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.serve.serve_helpers import CHROMIUM, Chromium, make_tiny_checkpoint, running_server
from ttsops.serve.app import ServeSettings, create_app


@pytest.fixture
def serve(tmp_path: Path) -> Callable[..., Any]:
    """``serve(models, loader, **settings)`` -> context manager yielding the base URL."""

    def _serve(models: dict[str, str], loader: Callable[[Path], Any], **kw: Any) -> Any:
        kw.setdefault("cache_dir", tmp_path / "cache")
        return running_server(create_app(ServeSettings(models=models, **kw), loader))

    return _serve


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real, untrained, tiny Tacotron2 checkpoint (``best_model.pt``) saved the lead's way."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "best_model.pt")


@pytest.fixture
def chromium() -> Iterator[Chromium]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install -y chromium)")
    browser = Chromium()
    try:
        yield browser
    finally:
        browser.close()
