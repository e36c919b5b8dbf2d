"""The study in MLflow: one parent run per study, one child run per generation (MlflowClient only).

Tag names are ``ttsops.infra.tracking.Tag``.

* Parent: tags ``ttsops.study``, ``ttsops.role=study``; params: sampler, pruner, n_trials, the
  search space; its id is kept in the Optuna study (user attr), so a resumed study reopens the
  same parent run (status back to RUNNING) instead of starting a second one. Workers that start
  together on several hosts elect one parent through the study's storage (``open_parent``): each
  creates a candidate run and records it as its own user attr, waits ``ELECTION_SETTLE_S``, then
  adopts the decision already recorded or, if none, the earliest candidate (start time, then run
  id); every loser deletes its own candidate. Two workers can only disagree if one of them takes
  longer than the settle time between reading the candidates and recording its decision.
* Child: tags ``mlflow.parentRunId``, ``ttsops.trial``, ``ttsops.restart_mode``,
  ``ttsops.warm_start_source`` (the checkpoint and the generation it came from, or ``none``),
  ``ttsops.plan_reason``; params ``tuner.<name>`` (prefixed so they never collide with the
  hparams train.py logs itself). Its id reaches the trainer (``MLFLOW_RUN_ID``), so the trainer's
  metrics land in it. The tuner adds ``objective`` (at the validation's global step) and, for a
  trainer read from TensorBoard, mirrors the trainer's metrics too. When the generation ends the
  child gets ``ttsops.state`` and a terminal status: FINISHED (complete), KILLED (pruned or
  interrupted) or FAILED.

Logging from inside the generation loop never raises: a tracking hiccup is a warning, not a
lost generation. ``latest_samples`` reads a generation's newest validation samples back (the
free-running alignment PNG and audio WAV train.py logs under ``samples/step_<step>/``) for the
new-best alert; it never raises either.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ttsops.errors import TunerError
from ttsops.infra.tracking import ROLE_GENERATION, ROLE_STUDY, Tag, get_or_create_experiment
from ttsops.smart_tuner.trainer.metrics_store import MetricRecord

logger = logging.getLogger(__name__)

PARENT_ATTR = "ttsops.mlflow_parent_run_id"
# + "<the unusable parent it replaces, or none>.<run id>": that run's start time (ms), one key per worker
CANDIDATE_PREFIX = "ttsops.parent_candidate."
ELECTION_SETTLE_S = 1.0  # every candidate recorded before then is seen by every worker that decides
STATUS = {"complete": "FINISHED", "pruned": "KILLED", "interrupted": "KILLED", "failed": "FAILED"}

# What train.py logs at each validation (ttsops.train.tracking.Tracker.log_samples):
# samples/step_<8-digit global step>/free_running_alignment.png and free_running.wav
SAMPLES_DIR = "samples"
SAMPLE_FILES = {"alignment_png": "free_running_alignment.png", "audio_wav": "free_running.wav"}
MAX_ATTACHMENT_BYTES = 5 * 1024 * 1024  # per file: Telegram and mail servers cap uploads
SAMPLE_STEPS_SEARCHED = 3  # newest step directories looked into (the newest may be incomplete)
_STEP_DIR = re.compile(r"step_(\d+)$")


def _mlflow_error() -> type[Exception]:
    from mlflow.exceptions import MlflowException

    return MlflowException


class StudyTracking:
    """Creates and closes the study's MLflow runs."""

    def __init__(
        self,
        client: Any,
        *,
        experiment_name: str,
        study_name: str,
        artifact_root: str | None = None,
        settle_s: float = ELECTION_SETTLE_S,
        wait: Callable[[float], Any] | None = None,
    ) -> None:
        self.client = client
        self.study_name = study_name
        self.settle_s, self._wait = settle_s, wait or threading.Event().wait  # an Event wait, not a sleep
        self.experiment_id = self._experiment(experiment_name, artifact_root)
        self.parent_id: str | None = None

    def _experiment(self, name: str, artifact_root: str | None) -> str:
        try:
            return get_or_create_experiment(self.client, name, artifact_root)
        except _mlflow_error() as e:
            raise TunerError(f"mlflow experiment {name!r}: {str(e).splitlines()[0]}") from None

    def open_parent(self, study: Any, params: Mapping[str, Any]) -> str:
        """The study's parent run: reopened if the Optuna study names one, else created."""
        err = _mlflow_error()
        known = study.user_attrs.get(PARENT_ATTR)
        if known:
            try:
                self.client.update_run(known, status="RUNNING")
                self.parent_id = str(known)
                logger.info("study %s: resuming MLflow parent run %s", self.study_name, known)
                return self.parent_id
            except err as e:
                logger.warning("parent run %s not usable (%s): starting a new one", known, e)
        try:
            run = self.client.create_run(
                self.experiment_id,
                run_name=self.study_name,
                tags={Tag.STUDY: self.study_name, Tag.ROLE: ROLE_STUDY},
            )
        except err as e:
            raise TunerError(f"mlflow: cannot create the study's parent run: {str(e).splitlines()[0]}") from None
        mine = str(run.info.run_id)
        self.parent_id = self._elect(study, mine, int(run.info.start_time or 0), str(known or "none"))
        if self.parent_id == mine:
            self._params(mine, params)
        else:
            self._safe(self.client.delete_run, mine)
            logger.info("study %s: another worker's parent run %s was elected", self.study_name, self.parent_id)
        return self.parent_id

    def _elect(self, study: Any, mine: str, start_ms: int, replaces: str) -> str:
        """The one parent run every worker of the study agrees on (see the module docstring).
        ``replaces``: the unusable parent this election replaces (``none`` the first time), so an
        old election's candidates and decision do not count."""
        prefix = f"{CANDIDATE_PREFIX}{replaces}."
        study.set_user_attr(prefix + mine, start_ms)
        self._wait(self.settle_s)
        attrs = study.user_attrs  # one read: the decision and the candidates as of the same moment
        decided = attrs.get(PARENT_ATTR)
        if not decided or decided == replaces:
            candidates = [(int(v), k[len(prefix) :]) for k, v in attrs.items() if k.startswith(prefix)]
            decided = min(candidates)[1]
            study.set_user_attr(PARENT_ATTR, decided)  # every decider writes the same id
        return str(decided)

    def log_decision(self, run_id: str | None, decision: Any, name: str) -> None:
        """An early-stop decision with every detector's verdict: tags plus a JSON artifact."""
        if not run_id:
            return
        for key, value in decision.to_tags().items():
            self._safe(self.client.set_tag, run_id, key, value)
        self._safe(self.client.log_dict, run_id, decision.to_dict(), f"early_stop/{name}.json")

    def open_child(
        self,
        trial: int,
        params: Mapping[str, Any],
        *,
        mode: str,
        source: str,
        reason: str,
        attempt_of: int | None = None,
        run_name: str | None = None,
    ) -> str:
        tags = {
            Tag.PARENT_RUN: self.parent_id or "",
            Tag.STUDY: self.study_name,
            Tag.ROLE: ROLE_GENERATION,
            Tag.TRIAL: str(trial),
            Tag.RESTART_MODE: mode,
            Tag.WARM_START_SOURCE: source,
            Tag.PLAN_REASON: reason[:4000],
        }
        if attempt_of is not None:
            tags[Tag.RETRY_OF_TRIAL] = str(attempt_of)
        try:
            run = self.client.create_run(
                self.experiment_id, run_name=run_name or f"{self.study_name}-gen{trial:03d}", tags=tags
            )
        except _mlflow_error() as e:
            raise TunerError(f"mlflow: cannot create the run of generation {trial}: {e}") from None
        self._params(run.info.run_id, {f"tuner.{k}": v for k, v in params.items()})
        return str(run.info.run_id)

    def finish_child(self, run_id: str, state: str, tags: Mapping[str, Any]) -> None:
        self._safe(
            self._finish,
            run_id,
            STATUS.get(state, "FAILED"),
            {Tag.STATE: state, **{k: str(v)[:4000] for k, v in tags.items()}},
        )

    def finish_parent(self, status: str, tags: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        if self.parent_id is None:
            return
        from mlflow.entities import Metric, RunTag

        def do() -> None:
            self.client.log_batch(
                self.parent_id,
                metrics=[Metric(k, float(v), _now_ms(), 0) for k, v in metrics.items()],
                tags=[RunTag(k, str(v)[:4000]) for k, v in tags.items()],
            )
            self.client.set_terminated(self.parent_id, status=status)

        self._safe(do)

    def latest_samples(self, run_id: str, max_bytes: int = MAX_ATTACHMENT_BYTES) -> dict[str, bytes]:
        """The run's newest validation samples: ``{"alignment_png": ..., "audio_wav": ...}``, each key
        only when found (the newest step that has the file, among the last few), no bigger than
        ``max_bytes`` and of the right format. Never raises: a miss is a warning (the alert goes
        out without it)."""
        found: dict[str, bytes] = {}
        try:
            steps = self._sample_steps(run_id)
            for step_dir in steps[:SAMPLE_STEPS_SEARCHED]:
                files = {
                    f.path.rsplit("/", 1)[-1]: f
                    for f in self.client.list_artifacts(run_id, step_dir)
                    if not f.is_dir
                }
                for key, name in SAMPLE_FILES.items():
                    if key not in found and name in files:
                        data = self._read_sample(run_id, files[name], max_bytes)
                        if data is not None:
                            found[key] = data
                if len(found) == len(SAMPLE_FILES):
                    break
        except Exception as e:  # an unreachable store or a broken artifact: the alert goes out anyway
            logger.warning(
                "run %s: validation samples not read (%s): the alert goes out without them",
                run_id,
                _first_line(e),
            )
            return found
        missing = [SAMPLE_FILES[k] for k in SAMPLE_FILES if k not in found]
        if missing:
            logger.warning(
                "run %s: no usable %s under %s/step_*: the alert goes out without it",
                run_id,
                " or ".join(missing),
                SAMPLES_DIR,
            )
        return found

    def _sample_steps(self, run_id: str) -> list[str]:
        """The run's ``samples/step_*`` artifact directories, newest (highest step) first."""
        steps = []
        for f in self.client.list_artifacts(run_id, SAMPLES_DIR):
            m = _STEP_DIR.search(f.path)
            if f.is_dir and m:
                steps.append((int(m.group(1)), f.path))
        return [path for _, path in sorted(steps, reverse=True)]

    def _read_sample(self, run_id: str, info: Any, max_bytes: int) -> bytes | None:
        """One sample file's bytes, or None (logged) when it is too big or not what it is named."""
        size, data = info.file_size, None
        if size is None or size <= max_bytes:  # the listing's size spares a big download
            with tempfile.TemporaryDirectory(prefix="ttsops-sample-") as tmp:
                local = Path(self.client.download_artifacts(run_id, info.path, dst_path=tmp))
                size = local.stat().st_size
                if size <= max_bytes:
                    data = local.read_bytes()
        if data is None:
            logger.warning(
                "run %s: %s is %d bytes (over %d): not attached", run_id, info.path, size, max_bytes
            )
        elif not _looks_like(info.path, data):
            logger.warning(
                "run %s: %s is not a valid %s file: not attached", run_id, info.path, info.path[-3:]
            )
            data = None
        return data

    def sink(self, run_id: str, mirror: bool) -> MlflowRunSink:
        return MlflowRunSink(self.client, run_id, mirror)

    def _finish(self, run_id: str, status: str, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        self.client.set_terminated(run_id, status=status)

    def _params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [
            Param(k, v if isinstance(v, str) else json.dumps(v, default=str)[:6000])
            for k, v in params.items()
        ]
        for i in range(0, len(items), 100):
            self._safe(self.client.log_batch, run_id, params=items[i : i + 100])

    @staticmethod
    def _safe(fn: Any, *args: Any, **kw: Any) -> None:
        try:
            fn(*args, **kw)
        except _mlflow_error() as e:
            logger.warning("mlflow: %s failed: %s", getattr(fn, "__name__", fn), str(e).splitlines()[0])


class MlflowRunSink:
    """The generation runner's RunSink: objective (and mirrored metrics) into the child run."""

    def __init__(self, client: Any, run_id: str, mirror: bool) -> None:
        self.client, self.run_id, self.mirror = client, run_id, mirror

    def records(self, records: list[MetricRecord]) -> None:
        if not self.mirror or not records:
            return
        from mlflow.entities import Metric

        metrics = [Metric(r.metric, float(r.value), int(r.timestamp * 1000), int(r.step)) for r in records]
        for i in range(0, len(metrics), 1000):
            StudyTracking._safe(self.client.log_batch, self.run_id, metrics=metrics[i : i + 1000])

    def objective(self, value: float, global_step: int, index: int) -> None:
        from mlflow.entities import Metric

        ts = _now_ms()
        StudyTracking._safe(
            self.client.log_batch,
            self.run_id,
            metrics=[
                Metric("objective", float(value), ts, int(global_step)),
                Metric("tuner_epoch", float(index), ts, int(global_step)),
            ],
        )


def _looks_like(path: str, data: bytes) -> bool:
    """The file's magic bytes match its extension (png, wav)."""
    if path.endswith(".png"):
        return data.startswith(b"\x89PNG\r\n\x1a\n")
    if path.endswith(".wav"):
        return data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    return False


def _first_line(e: BaseException) -> str:
    lines = str(e).splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
