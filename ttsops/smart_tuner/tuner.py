"""The Smart Tuner loop: ``ttsops tune --config YAML [key=value ...]`` (and ``smart_tuner.py``).

One study = one Optuna study = one MLflow parent run. Each generation (one trial, one trainer
process, one MLflow child run):

1. ``OptimizationEngine.ask`` proposes params (a re-queued interrupted trial comes first);
2. ``ParamScheduler.plan`` decides how it starts from the best checkpoint so far
   (``best_model.pt``): exact resume, warm start, or fresh;
3. ``TrainerWrapper`` launches the trainer with the child run's id; ``GenerationRunner`` follows its
   metrics (LogWatcher -> MetricsStore), reports the objective each epoch (step = epoch in this
   generation) so the pruner can stop it (SIGINT, checkpoint kept), retries crashes;
4. the trial is told COMPLETE (value = objective at its last epoch), PRUNED or FAIL; a COMPLETE
   one that beats the best goes to ``ModelRegistry`` (``best_model.pt``, a registry version, the
   alias if the promotion gate passes) and is announced (``new_best``, with the generation's newest
   alignment PNG and audio WAV from its MLflow run when the trainer logged them);
5. ``EarlyStopController.decide_study`` over the generations' objectives may end the study;
   ``core_engine.n_trials`` and ``core_engine.wall_clock_budget_minutes`` cap it.

A tuner killed with ``kill -9`` is resumed by running the same command again (study_state.py).
SIGINT/SIGTERM to the tuner stops the running generation cleanly (its trial is re-queued for the
next session) and closes the study; a second signal exits at once.
"""

from __future__ import annotations

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
from ttsops.errors import TunerError
from ttsops.infra.atomic import atomic_write_text, file_lock
from ttsops.infra.tracking import Tag, artifact_root
from ttsops.registry.model_registry import Candidate, ModelRegistry
from ttsops.smart_tuner.alerts.notifier import Notifier, alert_notifier
from ttsops.smart_tuner.early_stop.controller import EarlyStopController
from ttsops.smart_tuner.search.objective import objective
from ttsops.smart_tuner.search.opt_engine import OptimizationEngine
from ttsops.smart_tuner.search.param_scheduler import ParamScheduler, RestartPlan
from ttsops.smart_tuner.study import history, recovery
from ttsops.smart_tuner.study.tracking import StudyTracking
from ttsops.smart_tuner.trainer.adapter import CommandAdapter, TrainerAdapter
from ttsops.smart_tuner.trainer.generation import (
    DEFAULT_RUNNER,
    GenerationResult,
    GenerationRunner,
    RunnerConfig,
)
from ttsops.smart_tuner.trainer.log_watcher import make_watcher
from ttsops.smart_tuner.trainer.metrics_store import MetricsStore
from ttsops.smart_tuner.trainer.trainer_wrapper import (
    LOG_FILE,
    Checkpoint,
    LaunchSpec,
    TrainerWrapper,
    build_command,
    last_line,
)

logger = logging.getLogger(__name__)

OPTUNA_STATE = {
    "complete": TrialState.COMPLETE,
    "pruned": TrialState.PRUNED,
    "failed": TrialState.FAIL,
    "interrupted": TrialState.FAIL,
}


class Tuner:
    """Runs (or resumes) one study. Clocks, the stop event and the notifier are injectable."""

    def __init__(
        self,
        cfg: TunerConfig,
        *,
        python: str = sys.executable,
        clock: Any = time.monotonic,
        wall_clock: Any = time.time,
        stop_event: threading.Event | None = None,
        notifier: Notifier | None = None,
        runner_cfg: RunnerConfig = DEFAULT_RUNNER,
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
        self.runner_cfg = runner_cfg
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
        self.study_dir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.study_dir / "tuner_config.yaml"
        atomic_write_text(self.config_path, dump_config(cfg))  # another worker's trainer may be reading it
        # a bad command template or hparam fails here, before any trial is asked
        self.trainer.check_hparams(dict(cfg.training.hparams))
        build_command(
            cfg.adapter,
            LaunchSpec(0, self.study_dir, config_path=self.config_path, dataset=cfg.training.dataset),
            self.python,
        )
        self.engine = OptimizationEngine(  # the worker id salts the seed: a resumed study
            cfg.optimization,  # does not replay its start-up samples
            cfg.search_space,
            storage=self.storage,
            study_name=self.name,
            n_trials=cfg.core_engine.n_trials,
            worker_id=self.me,
        )
        self.study = self.engine.study
        self.store = MetricsStore(self.study_dir / "metrics.db")
        self.wrapper = TrainerWrapper(
            cfg.adapter, python=self.python, clock=self._clock, trainer=self.trainer
        )
        self.early = EarlyStopController(cfg.smart_early_stopping)
        self._dataset_version = dataset_version(cfg.training.dataset)

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
        a = self.cfg.adapter
        stale_after = max(120.0, 3 * self.runner_cfg.heartbeat_s + a.stop_grace_s + 2 * a.kill_grace_s)

        def killed(it: recovery.Interrupted) -> None:
            if it.run_id:
                self.tracking.finish_child(it.run_id, "interrupted", {Tag.INTERRUPTED: "tuner died"})

        recovered = recovery.recover_interrupted(
            self.study,
            self.wrapper,
            self.engine.stale_running_trials(stale_after),
            me=self.me,
            on_recovered=killed,
        )
        with file_lock(self.study_dir / ".parent.lock"):  # workers starting together share one parent
            self.tracking.open_parent(self.study, self._parent_params())
        return recovered

    def _parent_params(self) -> dict[str, Any]:
        o = self.cfg.optimization
        return {
            "sampler": o.sampler.value,
            "pruner": o.pruner.value,
            "n_trials": self.cfg.core_engine.n_trials,
            "epochs_per_generation": self.cfg.core_engine.epochs_per_generation,
            "search_space": {k: v.model_dump(exclude_none=True) for k, v in self.cfg.search_space.items()},
        }

    def _repair_best(self) -> None:
        """After a crash between ``tell`` and the registry: bring best_model.pt up to date."""
        best = self.engine.best()
        if best is None or not best.user_attrs.get(history.CKPT_ATTR):
            return
        self.registry.ensure_best(
            self._candidate(best.number, _value(best), best.params, best.user_attrs)
        )

    # --- the loop ---------------------------------------------------------------------------------
    def run(self) -> history.StudySummary:
        self._open()
        status, reason = "finished", ""
        try:
            while not (reason := self._stop_reason()):
                self._generation()
            if self.stop_event.is_set():
                status = "interrupted"
        except BaseException:
            status, reason = "interrupted", reason or "tuner error"
            raise
        finally:
            self._close(status, reason)
        return self.summary(status, reason)

    def _stop_reason(self) -> str:
        if self.stop_event.is_set():
            return "stopped by signal"
        trials = self.study.get_trials(deepcopy=False)
        if history.generations_used(trials) >= self.cfg.core_engine.n_trials:
            return f"n_trials ({self.cfg.core_engine.n_trials}) reached"
        if self._over_budget():
            return f"wall-clock budget ({self.cfg.core_engine.wall_clock_budget_minutes} min) spent"
        if self.cfg.smart_early_stopping.enabled:
            values, align = history.generation_objectives(trials)
            if len(values) >= 2:
                d = self.early.decide_study(
                    values, generation_alignment=align if any(math.isfinite(a) for a in align) else None
                )
                self.tracking.log_decision(self.tracking.parent_id, d, f"study_after_{len(values)}_generations")
                if d.should_end:
                    self.notifier.notify("early_stop", stop=True, reasons={"message": d.message})
                    return f"early stop: {d.message}"
        return ""

    def _over_budget(self) -> bool:
        budget = self.cfg.core_engine.wall_clock_budget_minutes
        return budget is not None and self._elapsed() >= budget * 60.0

    def _elapsed(self) -> float:
        return self._elapsed_before + (self._clock() - self._t0)

    def _generation(self) -> None:
        trial = self.engine.ask()
        n, params = trial.number, dict(trial.params)
        gen_dir = self.study_dir / "generations" / f"gen_{n:04d}"
        trial.set_user_attr(history.WORKER_ATTR, self.me)
        trial.set_user_attr(history.GEN_DIR_ATTR, str(gen_dir))
        plan, source = self._plan(params)
        trial.set_user_attr(
            history.PLAN_ATTR, {"mode": plan.mode, "source": source, "changed": list(plan.changed)}
        )
        run_id = self.tracking.open_child(
            n,
            params,
            mode=plan.mode,
            source=source,
            reason=plan.reason,
            attempt_of=trial.user_attrs.get(history.RETRY_OF_ATTR),
        )
        trial.set_user_attr(history.RUN_ID_ATTR, run_id)
        logger.info("generation %d: %s (%s) params %s", n, plan.mode, plan.reason, params)
        self.notifier.notify("generation_started", generation=n, hparams=params)
        spec = LaunchSpec(
            n,
            gen_dir,
            params,
            Checkpoint.from_plan(plan),
            run_id,
            self.tracking_uri,
            self.config_path,
            self.cfg.training.dataset,
            self._epochs(plan),
        )
        try:
            result = self._runner(run_id).run(trial, spec, self._watcher(n, run_id, spec))
        except Exception as e:  # the trainer cannot even start, or the tuner broke: not silently lost
            trial.set_user_attr(history.RESULT_ATTR, {"state": "failed", "reason": f"tuner error: {e}"})
            self.engine.tell(trial, None, TrialState.FAIL)
            self.tracking.finish_child(run_id, "failed", {Tag.REASON: f"tuner error: {e}"})
            raise
        self._conclude(trial, params, run_id, result)

    def _plan(self, params: dict[str, Any]) -> tuple[RestartPlan, str]:
        best = self.registry.best()
        if best is None or not self.cfg.core_engine.resume_from_checkpoint:
            return RestartPlan(
                "fresh",
                None,
                (),
                "no checkpoint yet" if best is None else "core_engine.resume_from_checkpoint is off",
            ), "none"
        plan = self.scheduler.plan(params, self.registry.best_path, best.hparams)
        source = f"generation {best.generation}: {self.registry.best_path}" if plan.checkpoint else "none"
        return plan, source

    def _epochs(self, plan: RestartPlan) -> int:
        """``epochs`` for the launch. train.py counts epochs in total and an exact resume restores
        the counter, so a resumed generation needs the checkpoint's epoch on top (read from the
        ``train_state.json`` beside the source checkpoint; other trainers have none: per process)."""
        n = self.cfg.core_engine.epochs_per_generation
        best = self.registry.best()
        if plan.mode != "resume" or best is None:
            return n
        state = self.trainer.train_state(Path(best.source).parent) or {}
        return n + int(state.get("epoch") or 0)

    def _runner(self, run_id: str) -> GenerationRunner:
        adapter, early = self.cfg.adapter, self.early
        budget = self.cfg.core_engine.epochs_per_generation
        early.new_trial()

        def trial_check(rows: list[dict[str, float]]) -> tuple[str, str] | None:
            if not self.cfg.smart_early_stopping.enabled:
                return None
            try:
                d = early.decide_trial(rows, budget=budget)
            except Exception as e:  # a detector problem must not cost the generation
                logger.warning("in-trial early stop skipped: %s", e)
                return None
            if d.should_end:
                logger.info("in-trial early stop (%s): %s", d.action.value, d.message)
                self.tracking.log_decision(run_id, d, f"trial_{d.action.value}")
            return (d.action.value, d.message) if d.should_end else None

        return GenerationRunner(
            self.wrapper,
            self.engine,
            self.store,
            adapter,
            objective_fn=objective,
            sink=self.tracking.sink(run_id, mirror=adapter.metrics_source != "mlflow"),
            notifier=self.notifier,
            cfg=self.runner_cfg,
            clock=self._clock,
            wall_clock=self._wall,
            stop_event=self.stop_event,
            trial_check=trial_check,
            should_stop=lambda: (
                "signal" if self.stop_event.is_set() else ("budget" if self._over_budget() else None)
            ),
        )

    def _watcher(self, n: int, run_id: str, spec: LaunchSpec) -> Any:
        a = self.cfg.adapter
        return make_watcher(
            a.metrics_source,
            generation=n,
            tracking_uri=self.tracking_uri,
            run_id=run_id,
            log_dir=spec.log_dir,
            metric_map=a.metric_map,
            clock=self._wall,
        )

    def _conclude(self, trial: Any, params: dict[str, Any], run_id: str, r: GenerationResult) -> None:
        n = trial.number
        trial.set_user_attr(history.CKPT_ATTR, str(r.checkpoint) if r.checkpoint else None)
        trial.set_user_attr(history.METRICS_ATTR, r.metrics)
        if r.alignment_held is not None:
            trial.set_user_attr(history.ALIGNMENT_ATTR, r.alignment_held)
        trial.set_user_attr(
            history.RESULT_ATTR,
            {
                "state": r.state,
                "reason": r.reason,
                "epochs": r.validations,
                "attempts": r.attempts,
                "trainer_s": round(r.trainer_s, 2),
            },
        )
        self.study.set_user_attr(history.ELAPSED_PREFIX + self.me, self._clock() - self._t0)
        self.engine.tell(trial, r.value, OPTUNA_STATE[r.state])
        if r.state == "interrupted":  # the next session runs these params again
            retries = [*trial.user_attrs.get(history.RETRY_HISTORY_ATTR, []), n]
            self.study.enqueue_trial(
                params,
                user_attrs={history.RETRY_OF_ATTR: retries[0], history.RETRY_HISTORY_ATTR: retries},
                skip_if_exists=False,
            )
        self.tracking.finish_child(
            run_id, r.state, {Tag.REASON: r.reason, Tag.EPOCHS: r.validations}
        )
        for key in ("trainer_s", "stop_s"):
            self.stats[key] += getattr(r, key)
        self.stats["latencies"] += r.latencies
        self.stats["first_metric_s"] += r.first_metric_s
        self.stats["generations"] += 1
        event = {"complete": "generation_finished", "pruned": "generation_pruned"}.get(r.state)
        if event == "generation_finished":
            self.notifier.notify(event, generation=n, value=r.value, reason=r.reason)
            self._register(n, r, params, run_id)
        elif event:
            self.notifier.notify(event, generation=n, reason=r.reason)
        logger.info("generation %d: %s (%s), value %s", n, r.state, r.reason, r.value)
        if r.refused_input:  # every generation would fail the same way: say why and stop
            raise TunerError(
                f"the trainer refused its input (exit 2) in generation {n}: "
                f"{last_line(self.study_dir / 'generations' / f'gen_{n:04d}' / LOG_FILE)}"
            )

    def _register(self, n: int, r: GenerationResult, params: dict[str, Any], run_id: str) -> None:
        if r.checkpoint is None or r.value is None:
            logger.warning("generation %d left no checkpoint: it cannot become best_model.pt", n)
            return
        study_best = self.engine.best()  # across all workers: a worker's local best is not enough
        if study_best is not None and study_best.number != n:
            return
        attrs = {history.CKPT_ATTR: str(r.checkpoint), history.METRICS_ATTR: r.metrics, history.RUN_ID_ATTR: run_id}
        decision = self.registry.consider(self._candidate(n, r.value, params, attrs))
        if decision.new_best:  # with the generation's newest alignment image and audio, when logged
            samples = self.tracking.latest_samples(run_id)
            self.notifier.notify("new_best", generation=n, value=r.value, metrics=dict(r.metrics), **samples)

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
    def _close(self, status: str, reason: str) -> None:
        try:
            self.study.set_user_attr(history.ELAPSED_PREFIX + self.me, self._clock() - self._t0)
            best = self.engine.best()
            metrics = {"best_objective": _value(best)} if best is not None else {}
            self.tracking.finish_parent(
                "FINISHED" if status == "finished" else "KILLED",
                {
                    Tag.STOP_REASON: reason,
                    Tag.STATUS: status,
                    Tag.BEST_TRIAL: best.number if best else "none",
                },
                metrics,
            )
            self.notifier.notify(
                "study_finished",
                best_value=best.value if best else None,
                n_generations=self.stats["generations"],
                reason=reason,
            )
        finally:
            self.store.close()
            close = getattr(self.notifier, "close", None)
            if close is not None:
                close()

    def summary(self, status: str, reason: str) -> history.StudySummary:
        best = self.engine.best()
        self.stats.update(
            wall_s=self._clock() - self._t0,  # this session, after set-up
            tuner_cpu_s=time.process_time() - self.stats["cpu_at_start"],
        )
        s = history.StudySummary(
            self.name,
            status,
            reason,
            self.study_dir,
            best.number if best else None,
            _value(best) if best else None,
            history.generation_rows(self.study.get_trials()),
            dict(self.stats),
        )
        out = {k: v for k, v in s.__dict__.items() if k != "study_dir"}
        atomic_write_text(self.study_dir / "summary.json", json.dumps(out, indent=1, default=str))
        return s


def _value(trial: Any) -> float:
    """A finished best trial's objective (Optuna types it Optional; a best trial always has one)."""
    return float(trial.value if trial.value is not None else math.nan)
