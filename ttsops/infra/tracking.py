"""MLflow, written once: the tag schema every writer and reader shares, where the store is, where a
new experiment keeps its artifacts, and get-or-create of an experiment.

* ``Tag``: every MLflow tag name ttsops writes or reads (the tuner's study and generation runs,
  train.py's run, registered model versions, ``ttsops reproduce``'s runs). Writers and readers
  (report, registry CLI, reproduce) use these constants, so a tag cannot be renamed on one side
  only. ``early_stop_tag`` names the tags of an early-stop decision.
* ``embedded_tracking_uri(work_dir)``: the default store, ``sqlite:///<work_dir>/mlflow.db`` (no
  server needed); ``tracking_uri(configured, work_dir)`` is the configured URI, else that.
* ``artifact_root(tracking_uri, default)``: an embedded SQLite store keeps artifacts beside its
  database (``mlartifacts/``; MLflow would otherwise write ``./mlruns`` in the working directory);
  a server (http, https, databricks) chooses its own; any other store (PostgreSQL) uses ``default``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class Tag:
    """MLflow tag names (constants: one place to read them from)."""

    PARENT_RUN = "mlflow.parentRunId"
    # the tuner's study (parent) and generation (child) runs
    STUDY = "ttsops.study"
    ROLE = "ttsops.role"  # ROLE_STUDY or ROLE_GENERATION
    TRIAL = "ttsops.trial"
    RESTART_MODE = "ttsops.restart_mode"
    WARM_START_SOURCE = "ttsops.warm_start_source"
    PLAN_REASON = "ttsops.plan_reason"
    RETRY_OF_TRIAL = "ttsops.retry_of_trial"
    STATE = "ttsops.state"  # how the generation ended: complete, pruned, failed, interrupted
    REASON = "ttsops.reason"
    EPOCHS = "ttsops.epochs"
    INTERRUPTED = "ttsops.interrupted"
    PREEMPTIONS = "ttsops.preemptions"  # times the generation was preempted (killed from outside, or its tuner died)
    REQUEUED = "ttsops.requeued"  # "true": an interrupted generation was queued again to resume
    STATUS = "ttsops.status"  # the study: finished or interrupted
    STOP_REASON = "ttsops.stop_reason"
    BEST_TRIAL = "ttsops.best_trial"
    # registered model versions
    GENERATION = "ttsops.generation"
    OBJECTIVE = "objective"
    DATASET_VERSION = "dataset_version"  # also on train.py's run
    GATE = "gate"
    PARAM_PREFIX = "param."
    METRIC_PREFIX = "metric."
    # train.py's run
    GIT_COMMIT = "git_commit"
    DATASET = "dataset"
    DATASET_FINGERPRINT = "dataset_fingerprint"
    TRAIN_WARM_START_SOURCE = "warm_start_source"
    WARM_START_SKIPPED = "warm_start_skipped"
    TRAIN_RESTART_MODE = "restart_mode"
    RESUMED_HPARAMS = "resumed_hparams"
    # train.py's run: what rerunning it exactly needs (docs/train_contract.md, "Reproducibility")
    GIT_DIRTY = "git_dirty"  # "" or "<sha256 of the local changes>: <n> files: ..."
    SEEDS = "seeds"
    DATA_ORDER = "data_order"
    DATA_SPLIT = "data_split"
    LIBRARIES = "library_versions"
    TORCH_THREADS = "torch_num_threads"
    DEVICE = "device"
    WORLD_SIZE = "world_size"  # DDP processes (1: not distributed)
    DETERMINISTIC = "deterministic_algorithms"
    SOURCE_RUN = "source_run_id"  # the run whose checkpoint a warm start / resume loaded
    SOURCE_STEP = "source_step"
    SOURCE_WEIGHTS = "source_weights_sha256"
    RESUMED_WITH = "resumed_with"  # settings an exact resume into the same run changed
    TRAIN_STATUS = "train_status"  # finished | stopped | failed
    FINAL_STEP = "final_step"
    FINAL_CHECKPOINT = "final_checkpoint"
    FINAL_WEIGHTS = "final_weights_sha256"
    # a run made by `ttsops reproduce`
    REPRODUCES = "ttsops.reproduces"
    REPRODUCTION = "ttsops.reproduction"  # its verdict: identical | within tolerance | differs


ROLE_STUDY = "study"
ROLE_GENERATION = "generation"
EARLY_STOP_PREFIX = "early_stop"


def early_stop_tag(level: str, field: str) -> str:
    """``early_stop.<level>.<field>``: a decision's ``action``, ``reason``, ``score``, ``message``,
    and one tag per detector (``field`` = the detector's name)."""
    return f"{EARLY_STOP_PREFIX}.{level}.{field}"


def embedded_tracking_uri(work_dir: str | Path) -> str:
    return f"sqlite:///{Path(work_dir).resolve() / 'mlflow.db'}"


def tracking_uri(configured: str | None, work_dir: str | Path) -> str:
    """The configured store, else the embedded one in ``work_dir``."""
    return configured or embedded_tracking_uri(work_dir)


def artifact_root(uri: str, default: Path | None = None) -> str | None:
    """Artifact location for a new experiment in the store at ``uri`` (see the module docstring)."""
    if uri.startswith(("http://", "https://", "databricks")):
        return None
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///") :]).parent / "mlartifacts").resolve().as_uri()
    return default.resolve().as_uri() if default is not None else None


def get_or_create_experiment(client: Any, name: str, artifact_location: str | None) -> str:
    """The experiment's id, creating it (with ``artifact_location``) if needed; safe when another
    process creates it at the same moment."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    try:
        return str(client.create_experiment(name, artifact_location=artifact_location))
    except MlflowException:
        exp = client.get_experiment_by_name(name)  # created by a parallel worker
        if exp is None:
            raise
        return str(exp.experiment_id)
