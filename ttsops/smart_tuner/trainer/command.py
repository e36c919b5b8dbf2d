"""One trainer launch as a command line: the adapter's command template with its placeholders
filled, the hparams in the adapter's style, the checkpoint flags, and the environment.

Hyperparameters reach the trainer in the adapter's ``hparams_style``: ``hparams_flag`` (one
``--hparams "k=v,k=v"``), ``cli_flags`` (``--k v`` per parameter) or ``env_json`` (JSON in
``TTSOPS_HPARAMS``). The MLflow child run reaches it as ``MLFLOW_TRACKING_URI``/``MLFLOW_RUN_ID``
(any MLflow trainer honours them) and, where the command template asks, as ``{run_id}`` and
``{tracking_uri}``.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttsops.config import AdapterConfig
from ttsops.errors import ConfigError
from ttsops.infra.kv import format_hparams

logger = logging.getLogger(__name__)

HPARAMS_ENV = "TTSOPS_HPARAMS"
PLACEHOLDERS = (
    "python",
    "output_dir",
    "log_dir",
    "config",
    "dataset",
    "run_id",
    "tracking_uri",
    "generation",
    "epochs",
)


@dataclass(frozen=True)
class Checkpoint:
    """What a launch starts from: ``mode`` is ``resume`` (exact, ``checkpoint_flag``),
    ``warm_start`` (weights only, plus ``warm_start_flag``) or ``fresh`` (no checkpoint)."""

    mode: str
    path: Path | None = None

    @classmethod
    def from_plan(cls, plan: Any | None) -> Checkpoint:
        """From a ``param_scheduler.RestartPlan`` (or None: fresh)."""
        if plan is None or plan.mode == "fresh" or plan.checkpoint is None:
            return cls("fresh")
        return cls(str(plan.mode), Path(plan.checkpoint))


@dataclass(frozen=True)
class LaunchSpec:
    """Everything one trainer launch needs; ``gen_dir`` is the trainer's output directory."""

    generation: int
    gen_dir: Path
    hparams: Mapping[str, Any] = field(default_factory=dict)  # what the trainer gets (searched params)
    checkpoint: Checkpoint = Checkpoint("fresh")
    run_id: str | None = None
    tracking_uri: str | None = None
    config_path: Path | None = None
    dataset: str | None = None
    epochs: int | None = None
    attempt: int = 0

    @property
    def log_dir(self) -> Path:
        return self.gen_dir / "logs"


def build_command(
    adapter: AdapterConfig,
    spec: LaunchSpec,
    python: str = sys.executable,
    hparams_string: Callable[[Mapping[str, Any]], str] = format_hparams,
) -> tuple[list[str], dict[str, str]]:
    """The argv and the extra environment for one launch (pure; no files touched).

    With ``hparams_flag`` style and a command template without ``{epochs}``, ``spec.epochs`` is
    passed as the ``epochs`` hparam (train.py's way of bounding a generation)."""
    values = {
        "python": python,
        "output_dir": str(spec.gen_dir),
        "log_dir": str(spec.log_dir),
        "config": str(spec.config_path or ""),
        "dataset": spec.dataset or "",
        "run_id": spec.run_id or "",
        "tracking_uri": spec.tracking_uri or "",
        "generation": str(spec.generation),
        "epochs": str(spec.epochs or ""),
    }
    argv = [_substitute(part, values) for part in adapter.command]
    env: dict[str, str] = {"PYTHONUNBUFFERED": "1", "TTSOPS_GENERATION": str(spec.generation)}
    if spec.tracking_uri:
        env["MLFLOW_TRACKING_URI"] = spec.tracking_uri
    if spec.run_id:
        env["MLFLOW_RUN_ID"] = spec.run_id
    hparams = dict(spec.hparams)
    if spec.epochs and not any("{epochs}" in part for part in adapter.command):
        hparams["epochs"] = spec.epochs
    argv += _hparams_args(
        adapter,
        hparams if adapter.hparams_style == "hparams_flag" else dict(spec.hparams),
        env,
        hparams_string,
    )
    argv += _checkpoint_args(adapter, spec.checkpoint)
    return argv, env


def _substitute(part: str, values: dict[str, str]) -> str:
    try:
        out = part.format_map(values)
    except (KeyError, ValueError, IndexError) as e:
        raise ConfigError(
            f"adapter.command: {part!r}: bad placeholder {e} (valid: {', '.join(PLACEHOLDERS)})"
        ) from None
    for name in ("config", "dataset"):
        if "{" + name + "}" in part and not values[name]:
            raise ConfigError(f"adapter.command uses {{{name}}} but no {name} is set")
    return out


def _render(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _hparams_args(
    adapter: AdapterConfig,
    hparams: dict[str, Any],
    env: dict[str, str],
    to_string: Callable[[Mapping[str, Any]], str],
) -> list[str]:
    if adapter.hparams_style == "hparams_flag":
        return [adapter.hparams_flag, to_string(hparams)] if hparams else []
    if adapter.hparams_style == "cli_flags":
        out: list[str] = []
        for key, value in hparams.items():
            out += [f"--{key}", _render(value)]
        return out
    env[HPARAMS_ENV] = json.dumps(hparams, sort_keys=True)
    return []


def _checkpoint_args(adapter: AdapterConfig, ckpt: Checkpoint) -> list[str]:
    if ckpt.mode == "fresh" or ckpt.path is None:
        return []
    args = [adapter.checkpoint_flag, str(ckpt.path)]
    if ckpt.mode == "warm_start":
        if adapter.warm_start_flag:
            args.append(adapter.warm_start_flag)
        else:  # the trainer has one way to reuse a checkpoint; it must cope with the change itself
            logger.warning(
                "adapter has no warm_start_flag: warm start passes %s %s only",
                adapter.checkpoint_flag,
                ckpt.path,
            )
    return args
