"""The checkpoint format the model loads (train.py writes it: ttsops/train/checkpoint.py).

A checkpoint is a ``torch.save``d dict: ``model`` (the state dict), ``hparams`` (the run's flat
hparams: ``ModelConfig`` and the mel features are rebuilt from them), ``format``
(``ttsops-tacotron2/1``), and for an exact resume ``optimizer``, ``scheduler``, ``scaler``,
``step``, ``epoch``, ``batch_in_epoch``, ``best_val_loss``, ``rng``, ``config`` (the resolved
config YAML) and ``mlflow_run_id``. ``best_model.pt`` is a copy of one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ttsops.errors import CheckpointError


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint's dict; CheckpointError (one line) for a missing, corrupt or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # torch raises many types for a corrupt or foreign file
        raise CheckpointError(f"cannot read checkpoint {path}: {e}".splitlines()[0]) from e
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not a ttsops checkpoint (no 'model' entry)")
    return state
