"""SPEC §3's ``smart_tuner/registry.py``: the registry is its own package now (``ttsops.registry``,
which serve reads too); this name keeps existing imports working."""

from ttsops.registry import *  # noqa: F403
from ttsops.registry import __all__ as _registry_names
from ttsops.registry.cli import main

__all__ = [*_registry_names, "main"]
