"""ModelRegistry: ``best_model.pt`` is always the study's best checkpoint; each new best becomes an
MLflow Model Registry version; the alias (``champion``) moves only through the promotion gate.

For each candidate (a COMPLETE generation, lower objective is better) that beats the current best:

1. its checkpoint is logged to the generation's MLflow child run as the MLflow pyfunc model
   ``model/`` (``ttsops.deploy.pyfunc``: ``MLmodel``, signature, input example,
   ``artifacts/best_model.pt``; a foreign trainer's checkpoint as plain ``model/best_model.pt``),
   plus ``model/ttsops_model.json``, and registered as a version of ``registry.model_name`` with
   ``source`` = that artifact directory. So ``mlflow.artifacts.download_artifacts("models:/NAME/V")``
   returns a directory holding a ``best_model.pt``, and ``mlflow.pyfunc.load_model`` / ``mlflow models
   serve`` take ``models:/NAME@champion``. Version tags: study, generation, objective,
   dataset version, ``param.<k>``, ``metric.<k>`` and the gate verdict. Registering is idempotent
   (a version of the same run is reused), so a tuner killed half-way re-does it safely;
2. ``<study_dir>/best_model.pt`` is replaced atomically (copy to a temp file, fsync, rename) and
   ``best_model.json`` beside it records where it came from;
3. if the promotion gate (``RegistryConfig.promotion_gate``: min alignment, max val_loss, min STOI;
   a metric the gate needs but the run did not log fails it) passes, the alias moves to the version.

Each new best replaces an older, worse one, so the alias always names the best version that
passed the gate: after registering, the alias goes to the study's best gate-passing version of
the registry line (its versions tagged with the study), so two workers registering at once leave
it on the better one whichever finishes last.

Workers on several hosts share no directory: each keeps its own ``best_model.pt``. ``pull``
brings it up to the registry line: when the study's best version (lowest objective tag) beats the
local best (or there is none), its ``best_model.pt`` (and train.py's ``train_state.json``, kept
beside it in the version) is downloaded from the registry and installed atomically;
``best_model.json`` then names the version in ``pulled_from`` and ``source`` is the local file. The alias is per registered model: a later study registering under the same name
takes it with its first gate-passing best (use one model name per line of experiments).

``ttsops registry list|show|promote`` (cli.py) inspects versions and moves the alias by hand.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ttsops.config import PromotionGate, RegistryConfig
from ttsops.errors import RegistryError
from ttsops.infra.atomic import atomic_copy, atomic_write_text, file_lock
from ttsops.infra.tracking import Tag

logger = logging.getLogger(__name__)

BEST_FILE = "best_model.pt"
BEST_META = "best_model.json"
ARTIFACT_DIR = "model"
TRAIN_STATE = "train_state.json"  # train.py's epoch counter beside its checkpoint (an exact resume needs it)


@dataclass(frozen=True)
class Candidate:
    study: str
    generation: int  # Optuna trial number
    objective: float
    checkpoint: Path
    run_id: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    hparams: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    dataset_version: str | None = None


@dataclass(frozen=True)
class BestRecord:
    """What ``best_model.json`` says about ``best_model.pt``."""

    generation: int
    objective: float
    source: str
    run_id: str | None
    version: str | None
    promoted: bool
    params: dict[str, Any]
    hparams: dict[str, Any]
    metrics: dict[str, float]
    dataset_version: str | None
    updated: float
    pulled_from: str | None = None  # models:/NAME/VERSION when another worker's best came through the registry


@dataclass(frozen=True)
class RegistryDecision:
    new_best: bool
    version: str | None = None
    promoted: bool = False
    gate_reasons: tuple[str, ...] = ()


def _model_dir(c: Candidate, path: Path) -> Path:
    """What a registry version holds: a ttsops Tacotron2 checkpoint as an MLflow pyfunc model
    (``ttsops.deploy.pyfunc``: MLmodel, signature, ``artifacts/best_model.pt``), anything else (a
    foreign trainer's checkpoint) as the file alone (``best_model.pt``); ``ttsops_model.json`` beside."""
    from ttsops.deploy.pyfunc import is_tacotron2_checkpoint, save_pyfunc

    if is_tacotron2_checkpoint(c.checkpoint):
        save_pyfunc(path, c.checkpoint)
    else:
        logger.info("%s is not a ttsops Tacotron2 checkpoint: registered as a file, without the pyfunc flavor",
                    c.checkpoint)
        path.mkdir(parents=True)
        shutil.copyfile(c.checkpoint, path / BEST_FILE)
    meta = {
        "study": c.study,
        "generation": c.generation,
        "objective": c.objective,
        "params": dict(c.params),
        "hparams": dict(c.hparams),
        "metrics": dict(c.metrics),
        "dataset_version": c.dataset_version,
    }
    (path / "ttsops_model.json").write_text(json.dumps(meta, indent=1, default=str))
    state = c.checkpoint.parent / TRAIN_STATE
    if state.is_file():  # another host resuming this checkpoint exactly needs its epoch counter
        shutil.copyfile(state, path / TRAIN_STATE)
    return path


def gate_check(gate: PromotionGate, metrics: Mapping[str, float]) -> tuple[bool, list[str]]:
    """Pure: does a model with these metrics pass the gate? Returns (passed, reasons it failed)."""
    rules = [
        ("attention_alignment_score", gate.min_attention_alignment_score, ">="),
        ("val_loss", gate.max_val_loss, "<="),
        ("stoi", gate.min_stoi, ">="),
        ("asr_wer", gate.max_asr_wer, "<="),
    ]
    failed = []
    for name, bound, op in rules:
        if bound is None:
            continue
        value = metrics.get(name)
        if value is None or not math.isfinite(float(value)):
            failed.append(f"{name} missing (needs {op} {bound})")
        elif (op == ">=" and float(value) < bound) or (op == "<=" and float(value) > bound):
            failed.append(f"{name}={float(value):.4g} (needs {op} {bound})")
    return not failed, failed


class ModelRegistry:
    """Keeps ``best_model.pt`` and the MLflow Model Registry in step for one study."""

    def __init__(
        self,
        cfg: RegistryConfig,
        study_dir: str | Path,
        *,
        client: Any | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.study_dir = Path(study_dir)
        self.study_dir.mkdir(parents=True, exist_ok=True)
        self.client: Any = client  # MlflowClient(tracking_uri=..., registry_uri=...) or None: files only
        self._clock = clock

    @property
    def best_path(self) -> Path:
        return self.study_dir / BEST_FILE

    def best(self) -> BestRecord | None:
        try:
            data = json.loads((self.study_dir / BEST_META).read_text())
            return BestRecord(**data) if self.best_path.is_file() else None
        except (OSError, ValueError, TypeError):
            return None

    def consider(self, c: Candidate, *, force: bool = False) -> RegistryDecision:
        """Make ``c`` the best if it beats the current one (``force``: even if it does not).

        Holds an exclusive lock on ``<study_dir>/.registry.lock`` throughout, so workers sharing
        the study directory (one host or a shared POSIX file system) compare and replace in turn.
        """
        if not math.isfinite(c.objective):
            return RegistryDecision(False)
        with file_lock(self.study_dir / ".registry.lock"):
            return self._consider(c, force)

    def _consider(self, c: Candidate, force: bool) -> RegistryDecision:
        current = self.best()
        if not force and current is not None and not c.objective < current.objective:
            return RegistryDecision(False)
        if not c.checkpoint.is_file():
            raise RegistryError(f"generation {c.generation}: checkpoint {c.checkpoint} does not exist")
        passed, reasons = gate_check(self.cfg.promotion_gate, c.metrics)
        version = self._register(c, passed, reasons) if self.client is not None else None
        atomic_copy(c.checkpoint, self.best_path)
        record = BestRecord(
            c.generation,
            float(c.objective),
            str(c.checkpoint),
            c.run_id,
            version,
            passed and version is not None,
            dict(c.params),
            dict(c.hparams),
            {k: float(v) for k, v in c.metrics.items()},
            c.dataset_version,
            self._clock(),
        )
        atomic_write_text(self.study_dir / BEST_META, json.dumps(asdict(record), indent=1, default=str))
        if version is not None and passed:
            self._settle_alias(c.study, version)
        logger.info(
            "new best: generation %d, objective %.5g -> %s%s%s",
            c.generation,
            c.objective,
            self.best_path,
            f", {self.cfg.model_name} v{version}" if version else "",
            f", alias {self.cfg.alias}"
            if version and passed
            else (f", gate failed: {'; '.join(reasons)}" if not passed else ""),
        )
        return RegistryDecision(True, version, passed and version is not None, tuple(reasons))

    def ensure_best(self, c: Candidate) -> RegistryDecision:
        """After a resume: make ``best_model.pt`` match the study's best COMPLETE generation."""
        current = self.best()
        if current is not None and current.generation == c.generation:
            return RegistryDecision(False, current.version, current.promoted)
        logger.info(
            "best_model.pt is behind the study (generation %s, study best %d): repairing",
            current.generation if current else None,
            c.generation,
        )
        return self.consider(c, force=True)

    # --- several hosts: the registry line ----------------------------------------------------------
    def line(self, study: str) -> list[Any]:
        """The study's versions of ``registry.model_name`` (tagged with the study), best first."""
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.search_model_versions(f"name='{self.cfg.model_name}'")
        except MlflowException as e:
            raise RegistryError(f"model registry: {self.cfg.model_name}: {str(e).splitlines()[0]}") from None
        mine = [(o, v) for v in found if v.tags.get(Tag.STUDY) == study and (o := _objective(v)) is not None]
        return [v for _, v in sorted(mine, key=lambda ov: (ov[0], int(ov[1].version)))]

    def pull(self, study: str) -> BestRecord | None:
        """Make ``best_model.pt`` the registry line's best when it beats the local one (see the
        module docstring); returns the (possibly new) local best. Files only (no client): local."""
        current = self.best()
        if self.client is None:
            return current
        line = self.line(study)
        objective = _objective(line[0]) if line else None
        if objective is None or (current is not None and not objective < current.objective):
            return current
        with file_lock(self.study_dir / ".registry.lock"):
            return self._pull(line[0], objective)

    def _pull(self, v: Any, objective: float) -> BestRecord | None:
        from mlflow.exceptions import MlflowException

        current = self.best()
        if current is not None and not objective < current.objective:  # another thread was first
            return current
        uri, started = f"models:/{self.cfg.model_name}/{v.version}", time.monotonic()
        with tempfile.TemporaryDirectory(prefix=".pull-", dir=self.study_dir) as tmp:
            try:
                # the version's source is its run's model/ (``_register``): read it with our client
                root = Path(self.client.download_artifacts(v.run_id, ARTIFACT_DIR, dst_path=tmp))
            except (MlflowException, OSError) as e:
                raise RegistryError(f"{uri}: download failed: {str(e).splitlines()[0]}") from None
            found = sorted(root.rglob(BEST_FILE), key=lambda p: len(p.parts))
            if not found:
                raise RegistryError(f"{uri}: no {BEST_FILE} in the registered files")
            metas = sorted(root.rglob("ttsops_model.json"))
            meta = json.loads(metas[0].read_text()) if metas else {}
            state = next(iter(root.rglob(TRAIN_STATE)), None)
            if state is not None:
                atomic_copy(state, self.study_dir / TRAIN_STATE)
            atomic_copy(found[0], self.best_path)
        record = BestRecord(
            int(v.tags.get(Tag.GENERATION, meta.get("generation", -1))),
            objective,
            str(self.best_path),
            v.run_id,
            str(v.version),
            self._alias_version() == str(v.version),
            dict(meta.get("params") or {}),
            dict(meta.get("hparams") or {}),
            {k: float(x) for k, x in (meta.get("metrics") or {}).items()},
            meta.get("dataset_version"),
            self._clock(),
            uri,
        )
        atomic_write_text(self.study_dir / BEST_META, json.dumps(asdict(record), indent=1, default=str))
        logger.info("best_model.pt pulled from %s (generation %d, objective %.5g) in %.2f s",
                    uri, record.generation, objective, time.monotonic() - started)
        return record

    def _alias_version(self) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(self.cfg.model_name, self.cfg.alias).version)
        except MlflowException:
            return None

    def _settle_alias(self, study: str, version: str) -> None:
        """Point the alias at the study line's best gate-passing version (``version`` when alone)."""
        passing = [v for v in self.line(study) if v.tags.get(Tag.GATE) == "pass"]
        target = str(passing[0].version) if passing else version
        if self._alias_version() != target:
            self.client.set_registered_model_alias(self.cfg.model_name, self.cfg.alias, target)

    # --- MLflow -----------------------------------------------------------------------------------
    def _register(self, c: Candidate, passed: bool, reasons: list[str]) -> str:
        from mlflow.exceptions import MlflowException

        if c.run_id is None:
            raise RegistryError(f"generation {c.generation}: no MLflow run to register the model from")
        name = self.cfg.model_name
        try:
            existing = self.client.search_model_versions(f"name='{name}' and run_id='{c.run_id}'")
            if existing:
                return str(existing[0].version)
            self._ensure_model(name)
            run = self.client.get_run(c.run_id)
            with tempfile.TemporaryDirectory(prefix="ttsops-model-") as tmp:
                model_dir = _model_dir(c, Path(tmp) / ARTIFACT_DIR)
                self.client.log_artifacts(c.run_id, str(model_dir), artifact_path=ARTIFACT_DIR)
            mv = self.client.create_model_version(
                name,
                source=f"{run.info.artifact_uri}/{ARTIFACT_DIR}",
                run_id=c.run_id,
                tags=self._tags(c, passed, reasons),
                description=f"study {c.study}, generation {c.generation}, objective {c.objective:.5g}",
            )
        except MlflowException as e:
            raise RegistryError(f"model registry: {name}: {str(e).splitlines()[0]}") from None
        return str(mv.version)

    def _ensure_model(self, name: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException:
            try:
                self.client.create_registered_model(name, description="ttsops Tacotron2 models")
            except MlflowException:  # another worker created it in between
                self.client.get_registered_model(name)

    @staticmethod
    def _tags(c: Candidate, passed: bool, reasons: list[str]) -> dict[str, str]:
        tags = {
            Tag.STUDY: c.study,
            Tag.GENERATION: str(c.generation),
            Tag.OBJECTIVE: repr(float(c.objective)),
            Tag.DATASET_VERSION: c.dataset_version or "unknown",
            Tag.GATE: "pass" if passed else "fail: " + "; ".join(reasons),
        }
        tags.update({f"{Tag.PARAM_PREFIX}{k}": str(v) for k, v in c.params.items()})
        tags.update({f"{Tag.METRIC_PREFIX}{k}": repr(float(v)) for k, v in c.metrics.items()})
        return {k: v[:5000] for k, v in tags.items()}


def _objective(v: Any) -> float | None:
    """A registry version's objective tag (None when missing or not finite)."""
    try:
        value = float(v.tags.get(Tag.OBJECTIVE, "nan"))
    except ValueError:
        return None
    return value if math.isfinite(value) else None
