"""Everything train.py decides before the first step: flags, config, hparams, dataset, device.

All checks happen here, so bad input fails with one line before any model is built.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from ttsops.config import TrainConfig, dump_config, load_config
from ttsops.data.dataset import read_metadata
from ttsops.errors import ConfigError
from ttsops.infra.tracking import embedded_tracking_uri
from ttsops.train.hparams import HParams


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ttsops train", description="Train Tacotron2 (NVIDIA-compatible flags).")
    ap.add_argument("-o", "--output_directory", required=True, help="checkpoints and train_state.json")
    ap.add_argument("-l", "--log_directory", default=None, help="TensorBoard logs (default: OUT/logs)")
    ap.add_argument("-c", "--checkpoint_path", default=None, help="checkpoint to resume (or warm start)")
    ap.add_argument("--warm_start", action="store_true", help="load weights only; skip tensors that no longer fit")
    ap.add_argument("--hparams", default="", help='comma-separated overrides, e.g. "batch_size=16,learning_rate=3e-4"')
    ap.add_argument("--dataset", default=None, help="LJSpeech-layout dataset directory")
    ap.add_argument("--config", default=None, help="TunerConfig YAML (training, resources, monitoring sections)")
    ap.add_argument("--tracking_uri", default=None, help="MLflow tracking URI (default: sqlite in OUT)")
    ap.add_argument("--run_id", default=None, help="log into this existing MLflow run (the tuner's child run)")
    ap.add_argument("--experiment", default=None, help="MLflow experiment name")
    ap.add_argument("--run_name", default=None)
    ap.add_argument("--max_steps", type=int, default=None, help="stop after this global step (smoke tests)")
    ap.add_argument("--validate_at_max_steps", action="store_true",
                    help="when --max_steps ends an epoch, validate it before stopping (ttsops reproduce)")
    ap.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. resources.device=cpu")
    return ap


@dataclass(frozen=True)
class RunSetup:
    hp: HParams
    cfg: TrainConfig
    config_yaml: str  # the whole resolved config file, secrets masked (logged and kept in checkpoints)
    dataset: Path
    out_dir: Path
    log_dir: Path
    checkpoint: Path | None
    warm_start: bool
    tracking_uri: str
    run_id: str | None
    experiment: str
    run_name: str | None
    max_steps: int | None
    validate_at_max_steps: bool = False


def resolve_setup(argv: list[str] | None) -> RunSetup:
    args = build_parser().parse_intermixed_args(argv)
    full = load_config(args.config, args.overrides)
    cfg = full.train_config()
    try:
        hp = HParams().replace(**cfg.training.hparams)
    except ConfigError as e:
        raise ConfigError(f"{args.config or '<defaults>'}: training.hparams: {e}") from None
    hp = hp.with_string(args.hparams)
    dataset = args.dataset or cfg.training.dataset
    if not dataset:
        raise ConfigError("no dataset: pass --dataset DIR or set training.dataset in the config")
    read_metadata(dataset)  # raises DataError naming what is missing
    if args.warm_start and not args.checkpoint_path:
        raise ConfigError("--warm_start needs -c/--checkpoint_path")
    if args.checkpoint_path and not Path(args.checkpoint_path).is_file():
        raise ConfigError(f"-c/--checkpoint_path: file not found: {args.checkpoint_path}")
    out = Path(args.output_directory)
    tracking = (args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
                or cfg.monitoring.platforms.mlflow.tracking_uri or embedded_tracking_uri(out))
    return RunSetup(
        hp=hp, cfg=cfg, config_yaml=dump_config(full), dataset=Path(dataset), out_dir=out,
        log_dir=Path(args.log_directory) if args.log_directory else out / "logs",
        checkpoint=Path(args.checkpoint_path) if args.checkpoint_path else None,
        warm_start=args.warm_start, tracking_uri=tracking,
        run_id=args.run_id or os.environ.get("MLFLOW_RUN_ID"),
        experiment=args.experiment or cfg.monitoring.platforms.mlflow.experiment_name,
        run_name=args.run_name, max_steps=args.max_steps, validate_at_max_steps=args.validate_at_max_steps,
    )
