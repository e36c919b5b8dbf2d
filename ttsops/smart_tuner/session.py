"""One tuner process's hold on a study: opening it (the Optuna study and its storage, the metrics
store, the trainer wrapper, the early-stop controller, MLflow tracking, the registry, alerts),
recovering what a dead tuner left running, repairing ``best_model.pt`` after a crash, and closing
it with its summary. The loop that runs generations in it is ``tuner.Tuner``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import sys
import threading
import time
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from ttsops.config import TunerConfig, dump_config
from ttsops.data.versioning import dataset_version
from ttsops.errors import ConfigError, RegistryError
from ttsops.infra.atomic import atomic_write_text, file_lock
from ttsops.infra.tracking import Tag, artifact_root
from ttsops.registry.model_registry import Candidate, ModelRegistry
from ttsops.smart_tuner.alerts.notifier import Notifier, alert_notifier
from ttsops.smart_tuner.early_stop.controller import EarlyStopController
from ttsops.smart_tuner.search.baseline import baseline_params
from ttsops.smart_tuner.search.opt_engine import OptimizationEngine
from ttsops.smart_tuner.search.param_scheduler import ParamScheduler
from ttsops.smart_tuner.study import history, recovery
from ttsops.smart_tuner.study.tracking import StudyTracking
from ttsops.smart_tuner.trainer.adapter import CommandAdapter, TrainerAdapter
from ttsops.smart_tuner.trainer.command import LaunchSpec, build_command
from ttsops.smart_tuner.trainer.generation import (
    DEFAULT_RUNNER,
    RunnerConfig,
)
from ttsops.smart_tuner.trainer.metrics_store import MetricsStore
from ttsops.smart_tuner.trainer.trainer_wrapper import TrainerWrapper

logger = logging.getLogger(__name__)


class StudySession:
    """Opens, recovers and closes one study; ``Tuner`` runs its generations."""

    engine_name = "optuna"  # core_engine.primary_engine this session runs (RayStudy: ray_tune)

    def __init__(
        self, cfg: TunerConfig, *, python: str = sys.executable, clock: Any = time.monotonic,
        wall_clock: Any = time.time, stop_event: threading.Event | None = None,
        notifier: Notifier | None = None, runner_cfg: RunnerConfig | None = None,
        trainer: TrainerAdapter | None = None,
    ) -> None:
        self.cfg = cfg
        ce = cfg.core_engine
        self.name = ce.study_name
        self.work_dir = Path(ce.work_dir).resolve()
        self.study_dir = self.work_dir / self.name
        self.storage = ce.storage or f"sqlite:///{self.work_dir / 'optuna.db'}"
        # None: the embedded store beside the study (train.py gets the same URI from the environment)
        self.tracking_uri = cfg.tracking_uri()
        self.python, self._clock, self._wall = python, clock, wall_clock
        self.stop_event = stop_event or threading.Event()
        self._notifier_given = notifier
        self.notifier: Notifier  # set when the study opens (alerts start with it)
        # None: the default runner with the config's heartbeat (workers on other hosts judge by it)
        self.runner_cfg = runner_cfg or dataclasses.replace(DEFAULT_RUNNER, heartbeat_s=cfg.core_engine.heartbeat_s)
        self.me = recovery.worker_id()
        self.trainer: TrainerAdapter = trainer or CommandAdapter(cfg.adapter)
        self.scheduler = ParamScheduler(dict(cfg.training.hparams), trainer=self.trainer)
        self.stats: dict[str, Any] = {
            "trainer_s": 0.0,
            "stop_s": 0.0,
            "latencies": [],
            "first_metric_s": [],
            "generations": 0,
        }

    # --- set-up -----------------------------------------------------------------------------------
    def _open(self) -> None:
        opened = self._clock()
        self._open_study()
        self._open_tracking()
        recovered = self._recover()
        self._repair_best()
        self._elapsed_before = history.elapsed_s(self.study.user_attrs) - float(
            self.study.user_attrs.get(history.ELAPSED_PREFIX + self.me, 0.0)
        )
        self._t0 = self._clock()
        self.stats.update(setup_s=self._t0 - opened, cpu_at_start=time.process_time())
        self.notifier.notify(
            "study_started",
            storage=self.storage.split("@")[-1],
            resumed=len(self.study.trials) > 0,
            interrupted_trials=len(recovered),
        )

    def _open_study(self) -> None:
        cfg = self.cfg
        if cfg.core_engine.primary_engine != self.engine_name:  # never run one engine for another
            raise ConfigError(f"core_engine.primary_engine={cfg.core_engine.primary_engine!r}, but this is the "
                              f"{self.engine_name!r} engine (ttsops tune picks the engine the config names)")
        self.config_path = self.study_dir / "tuner_config.yaml"
        # a bad command template or hparam fails here, before any trial is asked or file written
        self.trainer.check_hparams(dict(cfg.training.hparams))
        build_command(
            cfg.adapter,
            LaunchSpec(0, self.study_dir, config_path=self.config_path, dataset=cfg.training.dataset),
            self.python,
        )
        self.study_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.config_path, dump_config(cfg))  # another worker's trainer may be reading it
        self.engine = OptimizationEngine(  # the worker id salts the seed: a resumed study
            cfg.optimization,  # does not replay its start-up samples
            cfg.search_space,
            storage=self.storage,
            study_name=self.name,
            n_trials=cfg.core_engine.n_trials,
            worker_id=self.me,
        )
        self.study = self.engine.study
        self._enqueue_baseline()
        self.store = MetricsStore(self.study_dir / "metrics.db")
        self.wrapper = TrainerWrapper(
            cfg.adapter, python=self.python, clock=self._clock, trainer=self.trainer
        )
        self.early = EarlyStopController(cfg.smart_early_stopping)
        if cfg.generation_epochs() < cfg.core_engine.epochs_per_generation:
            logger.warning("core_engine.epochs_per_generation=%d capped by optimization.hyperband.max_resource=%d: "
                           "Hyperband compares no generation past it", cfg.core_engine.epochs_per_generation,
                           cfg.generation_epochs())
        self._dataset_version = dataset_version(cfg.training.dataset)

    def _enqueue_baseline(self) -> None:
        """A new study runs the config's own hparams first (search/baseline.py)."""
        if not self.cfg.optimization.enqueue_baseline:
            return
        params, left = baseline_params(self.cfg.search_space, dict(self.cfg.training.hparams), self.trainer.default)
        if self.engine.enqueue_baseline(params):
            logger.info("study %s: the first trial runs the config's hparams %s%s", self.name, params,
                        "; left to the sampler: " + "; ".join(f"{k} ({why})" for k, why in left.items()) if left else "")

    def _open_tracking(self) -> None:
        from mlflow import MlflowClient

        cfg = self.cfg
        self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        self.tracking = StudyTracking(
            self.client,
            experiment_name=cfg.monitoring.platforms.mlflow.experiment_name,
            study_name=self.name,
            artifact_root=artifact_root(self.tracking_uri, self.work_dir / "mlartifacts"),
        )
        self.registry = ModelRegistry(cfg.registry, self.study_dir, client=self.client)
        self.notifier = self._notifier_given or alert_notifier(cfg.monitoring.alerts, self.name)

    def _recover(self) -> list[recovery.Interrupted]:
        recovered = self._recover_stale()
        with file_lock(self.study_dir / ".parent.lock"):  # same-host workers starting together queue here
            self.tracking.open_parent(self.study, self._parent_params())
        return recovered

    def _recover_stale(self) -> list[recovery.Interrupted]:
        """Finish and re-queue the RUNNING trials of dead workers: at the start and before each
        generation, so a worker killed on another host loses its trial to the living ones."""
        a = self.cfg.adapter
        stale_after = max(
            self.cfg.core_engine.stale_after_s, 3 * self.runner_cfg.heartbeat_s + a.stop_grace_s + 2 * a.kill_grace_s
        )

        def killed(it: recovery.Interrupted) -> None:
            if it.run_id:
                self.tracking.finish_child(
                    it.run_id,
                    "interrupted",
                    {Tag.INTERRUPTED: "tuner died", Tag.PREEMPTIONS: it.preemptions,
                     Tag.REQUEUED: str(it.requeued).lower()},
                )

        recovered = recovery.recover_interrupted(
            self.study,
            self.wrapper,
            self.engine.stale_running_trials(stale_after),
            me=self.me,
            max_preemptions=a.max_consecutive_preemptions,
            on_recovered=killed,
        )
        return recovered

    def _parent_params(self) -> dict[str, Any]:
        o = self.cfg.optimization
        return {
            "sampler": o.sampler.value,
            "pruner": o.pruner.value,
            "n_trials": self.cfg.core_engine.n_trials,
            "epochs_per_generation": self.cfg.generation_epochs(),
            "search_space": {k: v.model_dump(exclude_none=True) for k, v in self.cfg.search_space.items()},
        }

    def _repair_best(self) -> None:
        """After a crash between ``tell`` and the registry: bring best_model.pt up to date. The
        study's best from another host (its checkpoint is not here) comes through the registry."""
        best = self.engine.best()
        if best is None or not best.user_attrs.get(history.CKPT_ATTR):
            return
        if Path(best.user_attrs[history.CKPT_ATTR]).is_file():
            self.registry.ensure_best(self._candidate(best.number, _value(best), best.params, best.user_attrs))
        else:
            self.pull_best()

    def pull_best(self) -> None:
        """``best_model.pt`` up to the registry line (other hosts' champions); a registry that cannot
        be read is a warning: the local best stays."""
        try:
            self.registry.pull(self.name)
        except RegistryError as e:
            logger.warning("best_model.pt not brought up to the registry: %s", e)

    def _candidate(self, n: int, value: float, params: dict[str, Any], attrs: dict[str, Any]) -> Candidate:
        return Candidate(
            self.name,
            n,
            float(value),
            Path(attrs[history.CKPT_ATTR]),
            attrs.get(history.RUN_ID_ATTR),
            dict(params),
            self.scheduler.merged(dict(params)),
            dict(attrs.get(history.METRICS_ATTR) or {}),
            self._dataset_version,
        )

    # --- the end ----------------------------------------------------------------------------------
    def _settle_champion(self, timeout_s: float = 30.0) -> None:
        """Pull the registry line's best; when the study's best trial is better than what that gave
        (another worker told it COMPLETE a moment ago and registers it after the tell), wait for its
        registration, up to ``timeout_s``; and while other workers still train generations (RUNNING
        with a fresh heartbeat), wait for them, up to ``stale_after_s`` (neither on a signal): a host
        that closed before would keep an older champion."""
        deadline = time.monotonic() + timeout_s
        others_until = time.monotonic() + self.cfg.core_engine.stale_after_s
        while True:
            self.pull_best()
            study_best, local = self.engine.best(), self.registry.best()
            settled = study_best is None or study_best.value is None or (
                local is not None and local.objective <= float(study_best.value)
            )
            if settled and not (self._others_training() and time.monotonic() < others_until
                                and not self.stop_event.is_set()):
                return
            if settled or study_best is None:
                time.sleep(0.5)
                continue
            if self.stop_event.is_set() or time.monotonic() >= deadline:
                logger.warning("best_model.pt holds generation %s; the study's best, generation %d, was not in "
                               "the registry within %.0f s", local.generation if local else None,
                               study_best.number, timeout_s)
                return
            time.sleep(0.5)

    def _others_training(self) -> bool:
        """Another worker's generation is RUNNING and its heartbeat is fresh."""
        running = {t.number for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        stale = {t.number for t in self.engine.stale_running_trials(self.cfg.core_engine.stale_after_s)}
        return bool(running - stale)

    def _close(self, status: str, reason: str) -> None:
        try:
            self._settle_champion()  # every host ends with the study's champion in its best_model.pt
            self.study.set_user_attr(history.ELAPSED_PREFIX + self.me, self._clock() - self._t0)
            number, value = self.best_trial()
            metrics = {"best_objective": value} if value is not None else {}
            self.tracking.finish_parent(
                "FINISHED" if status == "finished" else "KILLED",
                {
                    Tag.STOP_REASON: reason,
                    Tag.STATUS: status,
                    Tag.BEST_TRIAL: number if number is not None else "none",
                },
                metrics,
            )
            self.notifier.notify(
                "study_finished",
                best_value=value,
                n_generations=self.stats["generations"],
                reason=reason,
            )
        finally:
            self.store.close()
            self.wrapper.close()
            close = getattr(self.notifier, "close", None)
            if close is not None:
                close()

    def best_trial(self) -> tuple[int | None, float | None]:
        """The study's best trial so far: ``(number, objective)``, or ``(None, None)``."""
        best = self.engine.best()
        return (best.number, _value(best)) if best is not None else (None, None)

    def rows(self) -> list[dict[str, Any]]:
        """The generation table (one row per trial) for the summary."""
        return history.generation_rows(self.study.get_trials())

    def summary(self, status: str, reason: str) -> history.StudySummary:
        number, value = self.best_trial()
        trials = self.study.get_trials()
        self.stats.update(
            wall_s=self._clock() - self._t0,  # this session, after set-up
            tuner_cpu_s=time.process_time() - self.stats["cpu_at_start"],
            preemptions=history.preemptions(trials),  # the whole study's, every session
        )
        s = history.StudySummary(
            self.name,
            status,
            reason,
            self.study_dir,
            number,
            value,
            self.rows(),
            dict(self.stats),
        )
        out = {k: v for k, v in s.__dict__.items() if k != "study_dir"}
        atomic_write_text(self.study_dir / "summary.json", json.dumps(out, indent=1, default=str))
        return s


def _value(trial: Any) -> float:
    """A finished best trial's objective (Optuna types it Optional; a best trial always has one)."""
    return float(trial.value if trial.value is not None else math.nan)
