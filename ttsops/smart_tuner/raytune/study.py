"""A study on Ray Tune: the same parent run, registry, alerts and summary as the Optuna engine
(``StudySession``), Ray's searcher and scheduler deciding which trials run.

``optimization.sampler`` picks the Optuna sampler that Ray's ``OptunaSearch`` drives (TPE by
default) and ``ray_tune.scheduler`` the scheduler: ``asha`` (``core_engine.n_trials`` trials,
ASHA stops the laggards at its rungs) or ``pbt`` (``ray_tune.population`` trials side by side;
every ``perturbation_interval`` validations the bottom ``quantile_fraction`` continue from a top
trial's checkpoint with perturbed hparams, clipped to the search space). A trial's resource is its
validations, up to ``ray_tune.max_epochs`` (default ``core_engine.epochs_per_generation``).

A trial that finishes its epochs (or is ended by the in-trial early stop) is a candidate for the
registry, as a complete Optuna generation is; a trial Ray stops is not. The study ends when Ray has
run them all, at ``core_engine.wall_clock_budget_minutes``, on SIGINT/SIGTERM, or when the
study-level early stop says so over the finished trials' objectives. PBT's exploit/explore log
(``pbt_global.txt``) is attached to the parent run.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
from ray import tune

from ttsops.config import AdapterConfig, TunerConfig
from ttsops.infra.tracking import artifact_root
from ttsops.smart_tuner.raytune.trainable import (
    OBJECTIVE,
    GenerationTrainable,
    RayContext,
    TrialNames,
    trial_index,
)
from ttsops.smart_tuner.session import StudySession
from ttsops.smart_tuner.study import history
from ttsops.smart_tuner.trainer.adapter import CommandAdapter, TrainerAdapter

logger = logging.getLogger(__name__)


class RayStudy(StudySession):
    """Runs one study on Ray Tune (see the module docstring)."""

    engine_name = "ray_tune"

    def __init__(
        self, cfg: TunerConfig, *, trainer: Callable[[AdapterConfig], TrainerAdapter] = CommandAdapter,
        **kw: Any,
    ) -> None:
        super().__init__(cfg, trainer=trainer(cfg.adapter), **kw)
        self.trainer_factory = trainer
        self.finished: list[dict[str, Any]] = []  # one row per ended trial, in the order they ended
        self.end_reason = ""

    def run(self) -> history.StudySummary:
        self._open()
        status, reason = "finished", ""
        started = False
        try:
            started = self._init_ray()
            grid = self._tuner().fit()
            errors = [str(e).splitlines()[0] for e in grid.errors]
            if errors:
                logger.warning("%d trial(s) failed; first: %s", len(errors), errors[0])
            reason = self.end_reason or ("stopped by signal" if self.stop_event.is_set() else self._ran_out())
            if self.stop_event.is_set():
                status = "interrupted"
        except BaseException:
            status, reason = "interrupted", reason or "tuner error"
            raise
        finally:
            self._attach_pbt_log()
            self._close(status, reason)
            if started:
                ray.shutdown()
        return self.summary(status, reason)

    def _ran_out(self) -> str:
        ce = self.cfg.core_engine
        if ce.wall_clock_budget_minutes is not None and self._elapsed() >= ce.wall_clock_budget_minutes * 60 - 1:
            return f"wall-clock budget ({ce.wall_clock_budget_minutes} min) spent"
        if self.cfg.ray_tune.scheduler == "pbt":
            return f"population of {self.cfg.ray_tune.population} trained to {self._max_epochs()} validations"
        return f"n_trials ({ce.n_trials}) reached"

    def _elapsed(self) -> float:
        return self._clock() - self._t0

    def _max_epochs(self) -> int:
        return self.cfg.ray_tune.max_epochs or self.cfg.core_engine.epochs_per_generation

    def _init_ray(self) -> bool:
        rt = self.cfg.ray_tune
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        # SIGINT/SIGTERM stay ours (cli.graceful_signals): the stopper then ends every trial, whose
        # trainer gets SIGINT and keeps its checkpoint, and the study closes as "interrupted"
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        if ray.is_initialized():
            return False
        if rt.address:
            ray.init(address=rt.address, log_to_driver=False)
        else:
            # "local": a new Ray of our own, even when a `ray start` cluster runs on this machine
            ray.init(address="local", num_cpus=rt.num_cpus, include_dashboard=False, log_to_driver=False)
        return True

    # --- the Ray tuner ----------------------------------------------------------------------------
    def _tuner(self) -> Any:
        cfg, rt = self.cfg, self.cfg.ray_tune
        ctx = RayContext(
            cfg, self.trainer_factory, self.python or sys.executable, str(self.study_dir), str(self.config_path),
            self.tracking_uri, str(self.tracking.parent_id), artifact_root(self.tracking_uri, self.work_dir / "mlartifacts"),
            os.getcwd(), self._max_epochs(), rt.scheduler,
        )
        trainable = tune.with_resources(
            tune.with_parameters(GenerationTrainable, ctx=ctx), {"cpu": rt.cpus_per_trial, "gpu": rt.gpus_per_trial}
        )
        budget = cfg.core_engine.wall_clock_budget_minutes
        scheduler, search, space, samples = self._scheduler(OBJECTIVE)
        names = TrialNames(f"{self.name}:{id(self)}")
        tune_cfg = tune.TuneConfig(
            metric=OBJECTIVE, mode="min", search_alg=search, scheduler=scheduler, num_samples=samples,
            max_concurrent_trials=rt.max_concurrent_trials, time_budget_s=None if budget is None else budget * 60,
            reuse_actors=True, trial_name_creator=names, trial_dirname_creator=names,
        )
        run_cfg = tune.RunConfig(
            name=self.name, storage_path=str(self.study_dir / "ray_results"), verbose=1,
            failure_config=tune.FailureConfig(max_failures=0),
            checkpoint_config=tune.CheckpointConfig(
                checkpoint_frequency=rt.perturbation_interval if rt.scheduler == "pbt" else 0, num_to_keep=4),
            callbacks=[_StudyCallback(self)], stop=_StudyStopper(self),
        )
        return tune.Tuner(trainable, param_space=space, tune_config=tune_cfg, run_config=run_cfg)

    def _scheduler(self, metric: str) -> tuple[Any, Any, dict[str, Any], int]:
        """(scheduler, search algorithm, param_space, num_samples) for ``ray_tune.scheduler``."""
        from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining
        from ray.tune.search.optuna import OptunaSearch

        from ttsops.smart_tuner.raytune.space import ClipToSpace, DefineByRun, tune_domains
        from ttsops.smart_tuner.search.baseline import baseline_params
        from ttsops.smart_tuner.search.samplers import SAMPLERS

        cfg, rt = self.cfg, self.cfg.ray_tune
        if rt.scheduler == "pbt":
            domains = tune_domains(cfg.search_space)
            pbt = PopulationBasedTraining(
                time_attr="training_iteration", perturbation_interval=rt.perturbation_interval,
                hyperparam_mutations=domains, quantile_fraction=rt.quantile_fraction,
                resample_probability=rt.resample_probability, custom_explore_fn=ClipToSpace(cfg.search_space),
                synch=rt.synch,
            )
            return pbt, None, domains, rt.population
        asha = ASHAScheduler(
            time_attr="training_iteration", max_t=self._max_epochs(), grace_period=rt.grace_period,
            reduction_factor=rt.reduction_factor,
        )
        sampler = SAMPLERS[cfg.optimization.sampler.value](cfg.optimization, cfg.search_space)
        first = None
        if cfg.optimization.enqueue_baseline:  # the config's own hparams first (search/baseline.py)
            params, _ = baseline_params(cfg.search_space, dict(cfg.training.hparams), self.trainer.default)
            first = [params] if params else None
        search = OptunaSearch(space=DefineByRun(cfg.search_space), metric=metric, mode="min", sampler=sampler,
                              points_to_evaluate=first)
        return asha, search, {}, cfg.core_engine.n_trials

    # --- what the driver sees -----------------------------------------------------------------------
    def trial_ended(self, trial: Any, error: str | None = None) -> None:
        r = dict(trial.last_result or {})
        value = r.get(OBJECTIVE)
        state = "failed" if error else str(r.get("state") or "pruned")  # only a finished trial reports one
        row = {
            "trial": trial_index(str(trial)),
            "state": str(state),
            "value": float(value) if value is not None else None,
            "epochs": int(r.get("training_iteration") or 0),
            "start": "ray",
            "warm_start_source": "",
            "preemptions": 0,
            "reason": error or r.get("reason") or f"stopped by {self.cfg.ray_tune.scheduler.upper()}",
            "params": {k: v for k, v in (trial.config or {}).items() if k in self.cfg.search_space},
            "seconds": round(float(r.get("time_total_s") or 0.0), 1) or None,
        }
        self.finished.append(row)
        self.stats["generations"] += 1
        for key in ("trainer_s", "stop_s"):
            self.stats[key] += float(r.get(key) or 0.0)
        self.stats["latencies"] += [float(x) for x in r.get("decision_latencies_s") or []]
        first = float(r.get("first_metric_s") or math.nan)
        if math.isfinite(first):
            self.stats["first_metric_s"].append(first)
        if state == "complete" and row["value"] is not None and r.get("checkpoint_path"):
            self._consider(row, r)

    def _consider(self, row: dict[str, Any], r: dict[str, Any]) -> None:
        metrics = {k: float(v) for k, v in r.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in _RAY_KEYS and k != OBJECTIVE}
        attrs = {history.CKPT_ATTR: r["checkpoint_path"], history.METRICS_ATTR: metrics,
                 history.RUN_ID_ATTR: r.get("run_id") or None}
        decision = self.registry.consider(self._candidate(row["trial"], row["value"], row["params"], attrs))
        if decision.new_best:
            self.notifier.notify("new_best", generation=row["trial"], value=row["value"], metrics=metrics)

    def study_should_end(self) -> bool:
        if self.stop_event.is_set():
            return True
        values = [r["value"] for r in self.finished if r["state"] == "complete" and r["value"] is not None]
        if not self.cfg.smart_early_stopping.enabled or len(values) < 2 or self.end_reason:
            return bool(self.end_reason)
        d = self.early.decide_study(values)
        self.tracking.log_decision(self.tracking.parent_id, d, f"study_after_{len(values)}_generations")
        if d.should_end:
            self.end_reason = f"early stop: {d.message}"
            self.notifier.notify("early_stop", stop=True, reasons={"message": d.message})
        return d.should_end

    def _settle_champion(self, timeout_s: float = 30.0) -> None:
        self.pull_best()  # one driver registers every trial: nothing in flight elsewhere

    def best_trial(self) -> tuple[int | None, float | None]:
        best = self.registry.best()
        return (best.generation, float(best.objective)) if best is not None else (None, None)

    def rows(self) -> list[dict[str, Any]]:
        return sorted(self.finished, key=lambda r: r["trial"])

    def _attach_pbt_log(self) -> None:
        logs = sorted((self.study_dir / "ray_results").glob("*/pbt_global.txt"))
        if logs and self.tracking.parent_id:
            self.tracking._safe(self.client.log_artifact, self.tracking.parent_id, str(logs[-1]), "ray_tune")


_RAY_KEYS = {
    "training_iteration", "time_total_s", "time_this_iter_s", "timestamp", "pid", "time_since_restore",
    "iterations_since_restore", "timesteps_total", "episodes_total", "timesteps_since_restore", "trial_index",
    "done", "checkpoint_dir_name", "should_checkpoint", "trainer_s", "stop_s", "first_metric_s",
    "decision_latency_p50_s", "decision_latencies_s",
}


_STUDIES: weakref.WeakValueDictionary[str, RayStudy] = weakref.WeakValueDictionary()


class _DriverOnly:
    """Ray copies callbacks and stoppers (it pickles them into its experiment state); the study
    they act for (clients, locks, stores) is found by its key in this process, never pickled."""

    def __init__(self, study: RayStudy) -> None:
        self.key = f"{study.name}:{id(study)}"
        _STUDIES[self.key] = study

    @property
    def study(self) -> RayStudy | None:
        return _STUDIES.get(self.key)


class _StudyCallback(_DriverOnly, tune.Callback):
    """Driver side: each ended trial becomes a summary row and, when complete, a registry candidate."""

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        if self.study is not None:
            self.study.trial_ended(trial)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        if self.study is not None:
            self.study.trial_ended(trial, error=_first_error_line(getattr(trial, "error_file", None)))


class _StudyStopper(_DriverOnly, tune.Stopper):
    """Ends the whole experiment on a signal or the study-level early stop."""

    def __init__(self, study: RayStudy) -> None:
        super().__init__(study)
        self._checked = -1

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def stop_all(self) -> bool:
        study = self.study
        if study is None:
            return False
        if study.stop_event.is_set():
            return True
        n = len(study.finished)
        if n == self._checked:
            return bool(study.end_reason)
        self._checked = n
        return study.study_should_end()


def _first_error_line(path: str | None) -> str:
    if not path or not Path(path).is_file():
        return "trial failed (no error file)"
    lines = [ln.strip() for ln in Path(path).read_text(errors="replace").splitlines() if ln.strip()]
    return f"trial failed: {lines[-1]}" if lines else "trial failed"
