"""One Ray trial: a ``ray.tune.Trainable`` that runs train.py through the Optuna engine's own
``GenerationRunner`` (crash retries, stall detection, preemption, in-trial early stop).

The runner runs in a thread and reports each validation to a ``_Bridge`` in place of the Optuna
engine; the bridge holds it there until Ray asks for the next result (``step``: continue) or
stops the trial (``cleanup``: the runner's pruner answer is "stop", so the trainer gets SIGINT and
keeps its checkpoint). Ray's ``training_iteration`` is therefore the trial's validation count.

Checkpoints: ``save_checkpoint`` copies train.py's newest checkpoint (and its ``train_state.json``)
with a ``meta.json`` naming the trial, its params and hparams; ``load_checkpoint`` plans the next
launch from it with the Optuna engine's ``ParamScheduler``: the trial's own checkpoint with the
same hparams is an exact resume, another trial's (PBT's exploit) with perturbed hparams a warm
start. Every trainer launch (a *segment*) is its own MLflow child run with the plan's mode,
source and reason (for PBT: which trial it cloned and what explore changed).
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ray import tune

from ttsops.config import AdapterConfig, TunerConfig
from ttsops.errors import TunerError
from ttsops.infra.tracking import Tag
from ttsops.smart_tuner.alerts.notifier import LogNotifier
from ttsops.smart_tuner.early_stop.controller import EarlyStopController
from ttsops.smart_tuner.search.objective import objective, objective_weights
from ttsops.smart_tuner.search.param_scheduler import ParamScheduler, RestartPlan
from ttsops.smart_tuner.study.tracking import StudyTracking
from ttsops.smart_tuner.trainer.adapter import TrainerAdapter
from ttsops.smart_tuner.trainer.command import Checkpoint, LaunchSpec
from ttsops.smart_tuner.trainer.generation import GenerationResult, GenerationRunner
from ttsops.smart_tuner.trainer.log_watcher import make_watcher
from ttsops.smart_tuner.trainer.metrics_store import MetricsStore
from ttsops.smart_tuner.trainer.trainer_wrapper import TrainerWrapper

logger = logging.getLogger(__name__)

OBJECTIVE = "objective"
META = "meta.json"
TRAIN_STATE = "train_state.json"


@dataclass(frozen=True)
class RayContext:
    """What every trial needs from the driver (pickled to Ray's workers)."""

    cfg: TunerConfig
    trainer: Callable[[AdapterConfig], TrainerAdapter]
    python: str
    study_dir: str
    config_path: str
    tracking_uri: str
    parent_id: str
    artifact_root: str | None
    cwd: str
    max_epochs: int
    scheduler: str  # "asha" | "pbt": named in the reason of a trial Ray stops


_NUMBERS: dict[str, dict[str, int]] = {}  # per study key: Ray trial id -> number, in the driver


class TrialNames:
    """``trial_name_creator``/``trial_dirname_creator``: ``trial_0000``, ``trial_0001``, ... in the
    order Ray creates trials (the number is the trial's generation number in MLflow and the
    registry). Ray copies the creator per trial, so the count lives in the driver's process."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __call__(self, trial: Any) -> str:
        numbers = _NUMBERS.setdefault(self.key, {})
        n = numbers.setdefault(str(trial.trial_id), len(numbers))
        return f"trial_{n:04d}"


def trial_index(name: str) -> int:
    tail = name.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else -1


class _Bridge:
    """The runner's ``Engine``: each report waits for Ray's verdict on the previous result."""

    def __init__(self) -> None:
        self.out: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._go = threading.Event()
        self._stop = threading.Event()
        self.metrics: dict[str, float] = {}

    def report(self, trial: Any, value: float, step: int) -> bool:
        self._go.clear()
        self.out.put(("report", (value, step, dict(self.metrics))))
        while not (self._go.wait(0.2) or self._stop.is_set()):
            pass
        return self._stop.is_set()

    def heartbeat(self, trial: Any) -> None:
        return None

    def prune_reason(self, trial: Any) -> str | None:
        return None  # Ray's scheduler decided; the driver names it

    def objective(self, fn: Callable[[dict[str, float]], float]) -> Callable[[dict[str, float]], float]:
        def wrapped(metrics: dict[str, float]) -> float:
            self.metrics = {k: float(v) for k, v in metrics.items()}
            return fn(metrics)

        return wrapped

    def resume(self) -> None:
        self._go.set()

    def stop(self) -> None:
        self._stop.set()


class GenerationTrainable(tune.Trainable):
    """A Ray trial running train.py segments (see the module docstring)."""

    def setup(self, config: dict[str, Any], ctx: RayContext) -> None:  # type: ignore[override]
        os.chdir(ctx.cwd)  # Ray starts trials in their own directory; the config's paths are relative to ours
        self.ctx = ctx
        self.adapter = ctx.trainer(ctx.cfg.adapter)
        self.wrapper = TrainerWrapper(ctx.cfg.adapter, python=ctx.python, trainer=self.adapter)
        self.scheduler = ParamScheduler(dict(ctx.cfg.training.hparams), trainer=self.adapter)
        self._thread: threading.Thread | None = None
        self._tracking: StudyTracking | None = None
        self._begin(config)

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """Ray reuses this actor for another trial (or this trial with PBT's new params): a trainer
        still running is stopped first, then the trial starts over as ``setup`` would (the fork server
        stays: the actor's next trainer is forked from it)."""
        self._stop_segment()
        self._begin(new_config)
        return True

    def _begin(self, config: dict[str, Any]) -> None:
        self.params = {k: config[k] for k in self.ctx.cfg.search_space if k in config}
        self.index = trial_index(self.trial_name)
        self.trial_dir = Path(self.ctx.study_dir) / "ray_trials" / f"trial_{self.index:04d}"
        self.segment = _next_segment(self.trial_dir)  # a restarted trial (PBT, a pause) goes on counting
        self._saved = False  # a checkpoint taken since the last result: Ray is pausing the trial
        self.plan = RestartPlan("fresh", None, (), "a new trial")
        self.source = "none"
        self._bridge = _Bridge()
        self._run_id: str | None = None
        self._value: float | None = None
        self._inherited: dict[str, float] | None = None  # the line's latest metrics where it starts

    # --- results ----------------------------------------------------------------------------------
    def step(self) -> dict[str, Any]:
        if self._thread is None:
            self._start()
        else:
            self._bridge.resume()
        self._saved = False
        kind, payload = self._bridge.out.get()
        while kind == "report" and self.iteration + 1 >= self.ctx.max_epochs:
            self._value = payload[0]  # the trial's last validation: its trainer finishes, then "done"
            self._bridge.resume()
            kind, payload = self._bridge.out.get()
        if kind == "report":
            value, _, metrics = payload
            self._value = value
            return {OBJECTIVE: value, **_finite(metrics), **self._where()}
        if kind == "error":
            if self._run_id is not None:
                self._track().finish_child(self._run_id, "failed", {Tag.REASON: f"tuner error: {payload}"})
            self._thread = None
            raise payload
        r: GenerationResult = payload
        self._conclude(r, r.reason)
        if r.value is None or not math.isfinite(r.value):
            raise TunerError(f"trial {self.index}: {r.state} ({r.reason}) without a finite objective")
        return {OBJECTIVE: r.value, "done": True, "state": r.state, "reason": r.reason,  # its best validation's
                **_finite(r.metrics or self._bridge.metrics), **self._where(r.checkpoint), **_costs(r)}

    def _where(self, ckpt: Path | None = None) -> dict[str, Any]:
        """Where the trial stands: ``ckpt``, else the newest checkpoint of its segment."""
        ckpt = ckpt or self.wrapper.latest_checkpoint(self._gen_dir)
        return {"checkpoint_path": str(ckpt or ""), "run_id": self._run_id or "", "trial_index": self.index}

    # --- one trainer launch -----------------------------------------------------------------------
    @property
    def _gen_dir(self) -> Path:
        return self.trial_dir / f"seg_{self.segment:02d}"

    def _start(self) -> None:
        ctx = self.ctx
        left = max(1, ctx.max_epochs - self.iteration)
        base = 0
        if self.plan.mode == "resume" and self.plan.checkpoint is not None:
            base = int((self.adapter.train_state(Path(self.plan.checkpoint).parent) or {}).get("epoch") or 0)
        self._run_id = self._track().open_child(
            self.index, self.params, mode=self.plan.mode, source=self.source, reason=self.plan.reason,
            run_name=f"{ctx.cfg.core_engine.study_name}-ray{self.index:03d}-seg{self.segment}",
        )
        spec = LaunchSpec(
            self.index, self._gen_dir, self.params, Checkpoint.from_plan(self.plan), self._run_id,
            ctx.tracking_uri, Path(ctx.config_path), ctx.cfg.training.dataset, left + base,
        )
        store = MetricsStore(self._gen_dir / "metrics.db")
        early = EarlyStopController(ctx.cfg.smart_early_stopping)
        early.new_trial()
        runner = GenerationRunner(
            self.wrapper, self._bridge, store, ctx.cfg.adapter,
            objective_fn=self._bridge.objective(lambda m: objective(m, weights=objective_weights(ctx.cfg))),
            sink=self._track().sink(self._run_id, mirror=ctx.cfg.adapter.metrics_source != "mlflow"),
            notifier=LogNotifier(ctx.cfg.core_engine.study_name),
            trial_check=self._trial_check(early, left),
        )
        a = ctx.cfg.adapter
        watcher = make_watcher(a.metrics_source, generation=self.index, tracking_uri=ctx.tracking_uri,
                               run_id=self._run_id, log_dir=spec.log_dir, metric_map=a.metric_map)

        def run() -> None:
            try:
                self._bridge.out.put(("done", runner.run(None, spec, watcher, None, self._inherited)))
            except BaseException as e:  # the trial fails with it; never a silent hang
                self._bridge.out.put(("error", e))
            finally:
                store.close()

        self._thread = threading.Thread(target=run, name=f"trial-{self.index}", daemon=True)
        self._thread.start()

    def _trial_check(self, early: EarlyStopController, budget: int) -> Callable[[list[dict[str, float]]], Any]:
        def check(rows: list[dict[str, float]]) -> tuple[str, str] | None:
            if not self.ctx.cfg.smart_early_stopping.enabled:
                return None
            try:
                d = early.decide_trial(rows, budget=budget)
            except Exception as e:  # a detector problem must not cost the trial
                logger.warning("in-trial early stop skipped: %s", e)
                return None
            if d.should_end:
                self._track().log_decision(self._run_id, d, f"trial_{d.action.value}")
            return (d.action.value, d.message) if d.should_end else None

        return check

    def _track(self) -> StudyTracking:
        if self._tracking is None:
            from mlflow import MlflowClient

            ctx = self.ctx
            client = MlflowClient(tracking_uri=ctx.tracking_uri)
            self._tracking = StudyTracking(
                client, experiment_name=ctx.cfg.monitoring.platforms.mlflow.experiment_name,
                study_name=ctx.cfg.core_engine.study_name, artifact_root=ctx.artifact_root,
            )
            self._tracking.parent_id = ctx.parent_id
        return self._tracking

    def _conclude(self, r: GenerationResult, reason: str) -> None:
        if self._run_id is not None:
            self._track().finish_child(self._run_id, r.state, {Tag.REASON: reason, Tag.EPOCHS: r.validations})
        self._thread = None

    def cleanup(self) -> None:
        """Ray stops or pauses the trial: the runner stops its trainer (SIGINT, checkpoint kept)."""
        try:
            self._stop_segment()
        finally:
            self.wrapper.close()  # the fork server; a later segment of this actor starts another

    def _stop_segment(self) -> None:
        if self._thread is None:
            return
        self._bridge.stop()
        self._thread.join(self.ctx.cfg.adapter.stop_grace_s + 3 * self.ctx.cfg.adapter.kill_grace_s + 30)
        while True:
            try:
                kind, payload = self._bridge.out.get_nowait()
            except queue.Empty:
                break
            if kind == "done":
                payload.state = "pruned" if payload.state in ("pruned", "complete") else payload.state
                why = (f"paused by Ray Tune's {self.ctx.scheduler.upper()} scheduler at its checkpoint (the trial "
                       "goes on in a later segment)") if self._saved else (
                       f"stopped by Ray Tune's {self.ctx.scheduler.upper()} scheduler")
                self._conclude(payload, why)

    # --- checkpoints ------------------------------------------------------------------------------
    def save_checkpoint(self, checkpoint_dir: str) -> dict[str, Any] | None:
        out = Path(checkpoint_dir)
        ckpt = self.wrapper.latest_checkpoint(self._gen_dir)
        meta = {
            "trial": self.index,
            "params": self.params,
            "hparams": self.scheduler.merged(dict(self.params)),
            "objective": self._value,
            "file": None if ckpt is None else ckpt.name,
            "validations": self.iteration,
            "metrics": self._bridge.metrics,  # what a scheduled metric (mcd, asr_wer) reads until re-measured
        }
        if ckpt is not None:
            shutil.copy2(ckpt, out / ckpt.name)
            state = ckpt.parent / TRAIN_STATE
            if state.is_file():
                shutil.copy2(state, out / TRAIN_STATE)
        (out / META).write_text(json.dumps(meta, default=str))
        self._saved = True
        return None

    def load_checkpoint(self, checkpoint: Any) -> None:
        src = Path(checkpoint if isinstance(checkpoint, str) else checkpoint.path)
        meta = json.loads((src / META).read_text())
        if meta.get("file") is None:
            self.plan, self.source = RestartPlan("fresh", None, (), "the checkpoint held no weights yet"), "none"
            return
        start = self._gen_dir / "start"  # Ray may delete its copy: ours lives with the segment
        start.mkdir(parents=True, exist_ok=True)
        for name in (meta["file"], TRAIN_STATE):
            if (src / name).is_file():
                shutil.copy2(src / name, start / name)
        plan = self.scheduler.plan(dict(self.params), start / meta["file"], dict(meta["hparams"]))
        self._inherited = dict(meta.get("metrics") or {})
        own = int(meta["trial"]) == self.index
        if own:
            why = f"trial {self.index} resumes its own checkpoint ({plan.reason})"
        else:
            changed = {k: (meta["params"].get(k), v) for k, v in self.params.items() if meta["params"].get(k) != v}
            explore = ", ".join(f"{k} {_fmt(a)} -> {_fmt(b)}" for k, (a, b) in changed.items()) or "none"
            why = (f"PBT exploit: trial {self.index} continues from trial {meta['trial']} (objective "
                   f"{_fmt(meta.get('objective'))} after {meta.get('validations')} validations); explore: {explore}; "
                   f"{plan.reason}")
        self.plan = replace(plan, reason=why)
        self.source = f"trial {meta['trial']}: {start / meta['file']}"


def _costs(r: GenerationResult) -> dict[str, Any]:
    """The segment's trainer lifetime and reaction times (the benchmark compares them across engines)."""
    lat = sorted(r.latencies)
    return {
        "trainer_s": r.trainer_s,
        "stop_s": r.stop_s,
        "first_metric_s": r.first_metric_s[0] if r.first_metric_s else float("nan"),
        "decision_latency_p50_s": lat[len(lat) // 2] if lat else float("nan"),
        "decision_latencies_s": lat,
    }


def _next_segment(trial_dir: Path) -> int:
    taken = [int(p.name[4:]) for p in trial_dir.glob("seg_*") if p.name[4:].isdigit()]
    return max(taken, default=-1) + 1


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if math.isfinite(v)}


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
