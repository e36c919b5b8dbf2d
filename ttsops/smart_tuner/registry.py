"""SPEC §3's ``smart_tuner/registry.py``: the registry is its own package now (``ttsops.registry``,
which serve reads too); this name keeps existing imports working."""

from ttsops.registry import (  # noqa: F401
    ARTIFACT_DIR,
    BEST_FILE,
    BEST_META,
    BestRecord,
    Candidate,
    ModelRegistry,
    RegistryDecision,
    gate_check,
)
from ttsops.registry.cli import main  # noqa: F401
