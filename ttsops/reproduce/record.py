"""A train.py run as MLflow recorded it: what ``ttsops reproduce`` reads before it reruns one.

``parse_record`` is pure (params, tags, the ``config.yaml`` artifact and the metric curves in, a
``RunRecord`` out, a ReproduceError naming the run and the missing record otherwise);
``read_record`` fetches those from a store; ``resolve_ref`` turns ``models:/NAME@ALIAS`` or
``models:/NAME/VERSION`` into the run that made the model. Tag names: ``ttsops.infra.tracking.Tag``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ttsops.errors import ReproduceError
from ttsops.infra.gitinfo import parse_dirty
from ttsops.infra.tracking import Tag
from ttsops.train.hparams import HParams

HPARAM_NAMES = frozenset(f.name for f in fields(HParams))
REQUIRED_TAGS = (Tag.GIT_COMMIT, Tag.DATASET, Tag.DATASET_FINGERPRINT, Tag.DATASET_VERSION)
Curves = Mapping[str, Mapping[int, float]]


@dataclass(frozen=True)
class Source:
    """The checkpoint a warm start or a resume of another run's checkpoint loaded."""

    mode: str  # warm_start | resume
    path: str  # as train.py was given it
    run_id: str | None  # the run that wrote it (None: not recorded)
    step: int
    weights: str | None  # sha256 of its weights (ttsops.train.reproducibility.weights_digest)


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    experiment_id: str
    name: str
    status: str  # MLflow's: FINISHED, KILLED, FAILED, RUNNING
    params: Mapping[str, str]
    tags: Mapping[str, str]
    config_yaml: str
    curves: Curves

    @property
    def hparams(self) -> dict[str, str]:
        """train.py's hparams (the tuner's own ``tuner.*`` params left out)."""
        return {k: v for k, v in self.params.items() if k in HPARAM_NAMES}

    @property
    def commit(self) -> str:
        return self.tags[Tag.GIT_COMMIT]

    @property
    def dirty(self) -> str | None:
        """sha256 prefix of the local changes the run's tree had; None when it was clean."""
        return parse_dirty(self.tags.get(Tag.GIT_DIRTY))

    @property
    def source(self) -> Source | None:
        mode = self.tags.get(Tag.TRAIN_RESTART_MODE, "fresh")
        if mode not in ("warm_start", "resume"):
            return None
        run = self.tags.get(Tag.SOURCE_RUN)
        return Source(mode, self.tags.get(Tag.TRAIN_WARM_START_SOURCE, ""),
                      run if run and run != "unknown" else None,
                      int(self.tags.get(Tag.SOURCE_STEP, "0")), self.tags.get(Tag.SOURCE_WEIGHTS) or None)

    @property
    def final_step(self) -> int:
        """Where the run ended: its tag, else the last step anything was logged at."""
        if self.tags.get(Tag.FINAL_STEP):
            return int(self.tags[Tag.FINAL_STEP])
        return max((s for c in self.curves.values() for s in c), default=0)

    @property
    def finished(self) -> bool:
        """It trained all its epochs (not stopped by a signal or --max_steps, not failed)."""
        status = self.tags.get(Tag.TRAIN_STATUS)
        return status == "finished" if status else self.status == "FINISHED"

    def validated_at(self, step: int) -> bool:
        return step in self.curves.get("val_loss", {})

    @property
    def threads(self) -> int | None:
        value = self.tags.get(Tag.TORCH_THREADS)
        return int(value) if value and value.isdigit() else None

    @property
    def device_type(self) -> str | None:
        """``cpu`` or ``cuda`` from the recorded device, None when not recorded."""
        device = self.tags.get(Tag.DEVICE)
        return device.split()[0].split(":")[0] if device else None

    def label(self) -> str:
        return f"run {self.run_id[:12]}" + (f" ({self.name})" if self.name else "")


def parse_record(run_id: str, experiment_id: str, name: str, status: str, params: Mapping[str, str],
                 tags: Mapping[str, str], config_yaml: str | None, curves: Curves) -> RunRecord:
    """Check that the run holds what a rerun needs; ReproduceError naming what is missing."""
    missing = [t for t in REQUIRED_TAGS if not tags.get(t)]
    if missing:
        raise ReproduceError(f"run {run_id}: no tag {', '.join(missing)}: not a run of ttsops train.py")
    if config_yaml is None:
        raise ReproduceError(f"run {run_id}: no config.yaml artifact: not a run of ttsops train.py")
    if not HPARAM_NAMES & set(params):
        raise ReproduceError(f"run {run_id}: no hparams among its params: not a run of ttsops train.py")
    return RunRecord(run_id, experiment_id, name, status, dict(params), dict(tags), config_yaml,
                     {k: dict(v) for k, v in curves.items()})


def read_curves(client: Any, run_id: str, names: list[str]) -> dict[str, dict[int, float]]:
    """Every value of each metric by step (the last one logged at a step wins)."""
    out: dict[str, dict[int, float]] = {}
    for name in names:
        out[name] = {int(m.step): float(m.value) for m in sorted(client.get_metric_history(run_id, name),
                                                                 key=lambda m: (m.step, m.timestamp))}
    return out


def read_record(client: Any, run_id: str) -> RunRecord:
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException as e:
        raise ReproduceError(f"run {run_id}: not found in {client.tracking_uri} ({_first_line(e)})") from None
    config = None
    with tempfile.TemporaryDirectory(prefix="ttsops-reproduce-") as tmp:
        try:
            config = Path(client.download_artifacts(run_id, "config.yaml", tmp)).read_text()
        except (MlflowException, OSError):
            pass
    curves = read_curves(client, run_id, sorted(run.data.metrics))
    return parse_record(run_id, run.info.experiment_id, run.info.run_name or "", run.info.status,
                        run.data.params, run.data.tags, config, curves)


def resolve_ref(client: Any, ref: str) -> str:
    """A run id as given, or the run behind ``models:/NAME@ALIAS`` / ``models:/NAME/VERSION``."""
    if not ref.startswith("models:"):
        return ref
    from mlflow.exceptions import MlflowException

    from ttsops.serve.loader import ModelSource

    src = ModelSource.parse(ref)
    try:
        if src.alias is not None:
            mv = client.get_model_version_by_alias(src.registry_name, src.alias)
        else:
            mv = client.get_model_version(src.registry_name, src.version)
    except MlflowException as e:
        raise ReproduceError(f"{ref}: not in the registry at {client.tracking_uri} ({_first_line(e)})") from None
    if not mv.run_id:
        raise ReproduceError(f"{ref}: version {mv.version} names no run that made it")
    return str(mv.run_id)


def _first_line(e: BaseException) -> str:
    lines = str(e).splitlines()
    return lines[0] if lines else type(e).__name__
