"""What makes a train.py run happen the same way twice, and what it records so it can be rerun.

Randomness: every generator is seeded from ``hparams.seed`` before the model is built (Python's
``random``, NumPy's global generator, torch's CPU and CUDA generators); the model's dropout masks
(also the fused decoder's, drawn up front for every step) and spectral/frame dropout draw from
torch's generator in a fixed order; the data order is the sampler's own ``random.Random(seed +
epoch)``; the train/validation split is a hash of each clip id. A ``--warm_start`` reseeds the
generators with ``seed + its source's step`` and the data order with ``seed + 1000 x its source's
global epoch``, so a continuation does not replay its source's dropout noise and batch order (a tuner
line of 20 generations used to train on the same 6-epoch sequence of batches and masks 20 times). Nothing in a run depends on the
wall clock (validation comes every ``val_every_epochs`` epochs; ``cpu_minutes`` is only a metric).

What differs between runs that share all of that, and why (docs/train_contract.md, "Reproducibility"):
the number of CPU threads and the hardware change the order of float summations (results agree
to a tolerance, not bit for bit); CUDA kernels (atomics in scatter/index ops, cuBLAS split-K,
cuDNN autotuning) are not deterministic unless ``resources.deterministic`` turns on torch's
deterministic algorithms, and even then only where they exist (torch warns where not).

``record_tags`` is what train.py logs for ``ttsops reproduce``: seeds, data order, split rule,
library versions, thread count, device, DDP world size and whether deterministic algorithms were on.
``weights_digest`` fingerprints a state dict tensor by tensor (final and source weights).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from ttsops.infra.tracking import Tag

LIBRARIES = ("torch", "numpy", "librosa", "soundfile", "soxr", "mlflow", "ttsops")


def seed_everything(seed: int) -> None:
    """Python's, NumPy's and torch's (CPU and every CUDA device) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def apply_determinism(on: bool, device: torch.device) -> None:
    """``resources.deterministic``: torch's deterministic algorithms (a warning names each op that
    has none), cuDNN without autotuning, and cuBLAS's fixed workspace (set before it starts)."""
    if not on:
        return
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def weights_digest(weights: Mapping[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes (sorted by name): equal digests mean
    bit-identical weights; independent of how the checkpoint file was pickled."""
    h = hashlib.sha256()
    for name in sorted(weights):
        t = weights[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def describe_device(device: torch.device) -> str:
    """``cpu (x86_64, AMD EPYC)`` or ``cuda:0 (NVIDIA H200, CUDA 12.8, cuDNN 91002)``."""
    if device.type == "cuda":
        return (f"{device} ({torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}, "
                f"cuDNN {torch.backends.cudnn.version()})")
    return f"{device} ({platform.machine()}, {_cpu_model()})"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown cpu"


WARM_START_SEEDS = "generators: seed + the source's step; data order: seed + 1000 x the source's global epoch + epoch"


def record_tags(seed: int, data_order: str, data_split: str, device: torch.device, deterministic: bool,
                world_size: int = 1) -> dict[str, str]:
    """The tags of a run that say how to rerun it (see the module docstring)."""
    return {
        Tag.SEEDS: json.dumps({"python": seed, "numpy": seed, "torch": seed, "data_order": f"{seed} + epoch",
                               "warm_start": WARM_START_SEEDS}),
        Tag.DATA_ORDER: data_order,
        Tag.DATA_SPLIT: data_split,
        Tag.LIBRARIES: json.dumps(library_versions()),
        Tag.TORCH_THREADS: str(torch.get_num_threads()),
        Tag.DEVICE: describe_device(device),
        Tag.WORLD_SIZE: str(world_size),
        Tag.DETERMINISTIC: "true" if deterministic else "false",
    }
