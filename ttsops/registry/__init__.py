"""The model registry: ``best_model.pt`` beside the study plus MLflow Model Registry versions and the
``champion`` alias (model_registry.py; the tuner writes it, serve reads it), and its CLI (cli.py)."""

from ttsops.registry.model_registry import (
    ARTIFACT_DIR,
    BEST_FILE,
    BEST_META,
    BestRecord,
    Candidate,
    ModelRegistry,
    RegistryDecision,
    gate_check,
)

__all__ = [
    "ARTIFACT_DIR",
    "BEST_FILE",
    "BEST_META",
    "BestRecord",
    "Candidate",
    "ModelRegistry",
    "RegistryDecision",
    "gate_check",
]
