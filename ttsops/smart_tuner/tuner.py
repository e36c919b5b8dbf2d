"""The Smart Tuner loop (run by ``ttsops tune``, cli.py).

One study = one Optuna study = one MLflow parent run. Each generation (one trial, one trainer
process, one MLflow child run):

1. ``OptimizationEngine.ask`` proposes params (a re-queued interrupted trial comes first);
2. ``ParamScheduler.plan`` decides how it starts from the best checkpoint so far
   (``best_model.pt``): exact resume, warm start, or fresh;
3. ``TrainerWrapper`` launches the trainer with the child run's id; ``GenerationRunner`` follows its
   metrics (LogWatcher -> MetricsStore), reports the objective each epoch (step = epoch in this
   generation) so the pruner can stop it (SIGINT, checkpoint kept), retries crashes; a generation
   that continues the best checkpoint is judged against that checkpoint's objective instead of by
   the pruner (search/warm_line.py);
4. the trial is told COMPLETE (value = objective at its last epoch), PRUNED or FAIL; a COMPLETE
   one that beats the best goes to ``ModelRegistry`` (``best_model.pt``, a registry version, the
   alias if the promotion gate passes) and is announced (``new_best``, with the generation's newest
   alignment PNG and audio WAV from its MLflow run when the trainer logged them);
5. ``EarlyStopController.decide_study`` over the completed generations' objectives may end the
   study (a pruned generation was cut short by a rule: it says nothing about the line's plateau);
   ``core_engine.n_trials`` and ``core_engine.wall_clock_budget_minutes`` cap it.

A tuner killed with ``kill -9`` is resumed by running the same command again (session.py,
study/recovery.py).
SIGINT/SIGTERM to the tuner stops the running generation cleanly (its trial is re-queued for the
next session) and closes the study; a second signal exits at once.

Preemption is not failure (trainer/preemption.py): a trainer killed from outside resumes in place;
a generation whose tuner died or stopped is re-queued (``RESUME_ATTR``) and its re-run resumes from
the newest checkpoint of its line with its objectives so far (``Carry``). Neither counts against
``n_trials`` or ``max_retries``; ``adapter.max_consecutive_preemptions`` bounds a crash loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from ttsops.errors import TunerError
from ttsops.infra.tracking import Tag
from ttsops.smart_tuner.early_stop.detectors import Action
from ttsops.smart_tuner.search.line_effect import queue_proposal
from ttsops.smart_tuner.search.line_head import CARRIED_ON, LineHead, LineSource
from ttsops.smart_tuner.search.objective import objective, objective_weights
from ttsops.smart_tuner.search.param_scheduler import RestartPlan
from ttsops.smart_tuner.search.warm_line import CARRY_ON_ATTR, REFERENCE_ATTR, line_level
from ttsops.smart_tuner.session import StudySession
from ttsops.smart_tuner.study import history, recovery
from ttsops.smart_tuner.trainer.command import Checkpoint, LaunchSpec
from ttsops.smart_tuner.trainer.generation import GenerationResult, GenerationRunner
from ttsops.smart_tuner.trainer.log_watcher import make_watcher
from ttsops.smart_tuner.trainer.preemption import Carry, Streak, epochs_to_run
from ttsops.smart_tuner.trainer.trainer_wrapper import LOG_FILE, last_line
from ttsops.smart_tuner.trainer.validations import VALUE_METRIC, metrics_at

logger = logging.getLogger(__name__)

OPTUNA_STATE = {
    "complete": TrialState.COMPLETE,
    "pruned": TrialState.PRUNED,
    "failed": TrialState.FAIL,
    "interrupted": TrialState.FAIL,
}


class Tuner(StudySession):
    """Runs (or resumes) one study: generations until a stop reason (the session opens and closes
    the study). Clocks, the stop event, the notifier and the trainer adapter are injectable."""

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
            return self._budget_reason()
        if self.cfg.smart_early_stopping.enabled:
            values, align = history.generation_objectives(trials, completed_only=True)
            if len(values) >= 2:
                done = history.finished_generations(trials, completed_only=True)
                numbers = [t.number for t in done]
                d = self.early.decide_study(
                    values, generation_alignment=align if any(math.isfinite(a) for a in align) else None,
                    line_levels=self.line.levels(numbers), line_train_loss=history.kept_metric(done, "train_loss"),
                )
                if d.should_end and self.line.carry_on_before_end(numbers, self.cfg.smart_early_stopping.tuner_patience):
                    d = dataclasses.replace(d, action=Action.CONTINUE, message=f"{d.message}; {CARRIED_ON}")
                self.tracking.log_decision(self.tracking.parent_id, d, f"study_after_{len(values)}_generations")
                if d.should_end:
                    self.notifier.notify("early_stop", stop=True, reasons={"message": d.message})
                    return f"early stop: {d.message}"
        return ""

    def _budget_reason(self) -> str:
        return f"wall-clock budget ({self.cfg.core_engine.wall_clock_budget_minutes} min) spent"

    def _over_budget(self) -> bool:
        budget = self.cfg.core_engine.wall_clock_budget_minutes
        return budget is not None and self._elapsed() >= budget * 60.0

    def _elapsed(self) -> float:
        return self._elapsed_before + (self._clock() - self._t0)

    def _generation(self) -> None:
        self._recover_stale()  # a worker that died on another host: its trial goes back in the queue
        self._queue_next()
        trial = self.engine.ask()
        n, params = trial.number, dict(trial.params)
        trial.set_user_attr(history.WORKER_ATTR, self.me)
        trial.set_user_attr(history.GEN_DIR_ATTR, str(gen_dir := self._gen_dir(n)))
        carry = self._carry(trial.user_attrs.get(history.RESUME_ATTR))
        resumes = carry is not None and carry.checkpoint is not None
        line = None if resumes else self._line()  # once: another worker may move the head meanwhile
        plan, source = self._plan(params, carry, line)
        self._judge_by_line(trial, plan, carry, line)
        epochs, epoch_base = self._epochs(plan, carry, line)
        trial.set_user_attr(
            history.PLAN_ATTR,
            {"mode": plan.mode, "source": source, "changed": list(plan.changed), "epoch_base": epoch_base},
        )
        if carry is not None and carry.metrics:  # what a preemption of this run would carry on
            trial.set_user_attr(history.METRICS_ATTR, carry.metrics)
        run_id = self.tracking.open_child(n, params, mode=plan.mode, source=source, reason=plan.reason,
                                          attempt_of=trial.user_attrs.get(history.RETRY_OF_ATTR))
        trial.set_user_attr(history.RUN_ID_ATTR, run_id)
        logger.info("generation %d: %s (%s) params %s", n, plan.mode, plan.reason, params)
        self.notifier.notify("generation_started", generation=n, hparams=params)
        spec = LaunchSpec(n, gen_dir, params, Checkpoint.from_plan(plan), run_id, self.tracking_uri, self.config_path,
                          self.cfg.training.dataset, epochs)
        try:
            runner = self._runner(trial, run_id, self._inherited_alignment(plan, carry, line))
            result = runner.run(trial, spec, self._watcher(n, run_id, spec), carry, self._inherit(plan, line))
        except Exception as e:  # the trainer cannot even start, or the tuner broke: not silently lost
            trial.set_user_attr(history.RESULT_ATTR, {"state": "failed", "reason": f"tuner error: {e}"})
            self.engine.tell(trial, None, TrialState.FAIL)
            self.tracking.finish_child(run_id, "failed", {Tag.REASON: f"tuner error: {e}"})
            raise
        self._conclude(trial, params, run_id, result)

    def _queue_next(self) -> None:
        """The head resumed as one run after line_patience rejections, else what the line effects say."""
        if self.line.queue_carry_on() is None:
            queue_proposal(self.study, self.cfg.optimization, self.cfg.search_space)

    def _gen_dir(self, n: int) -> Path:
        return self.study_dir / "generations" / f"gen_{n:04d}"

    def _carry(self, resume: dict[str, Any] | None) -> Carry | None:
        """What a re-queued preempted trial takes over (None for any other trial): the newest
        checkpoint of its line, the objectives its source reported and its last metrics. Without a
        checkpoint the line starts over (its objectives went with the weights) but keeps its streak."""
        if not resume:
            return None
        src = self.engine.frozen(int(resume["trial"]))
        gen_dir = resume.get("gen_dir")
        ckpt = self.wrapper.latest_checkpoint(gen_dir) if gen_dir else None
        if ckpt is None:
            return Carry(src.number, None, {}, {}, Streak.from_dict(resume))
        metrics = self._latest(src.number, src.user_attrs.get(history.METRICS_ATTR) or {})
        values = {int(k): float(v) for k, v in src.intermediate_values.items()}
        return Carry(src.number, ckpt, values, metrics, Streak.from_dict(resume), int(resume.get("epoch_base", 0)))

    def _latest(self, generation: int, kept: dict[str, float]) -> dict[str, float]:
        """A generation's metrics at its last validation, over ``kept`` (those it was kept with)."""
        hist = self.store.history(generation)
        steps = [s for s, _ in hist.get(VALUE_METRIC, [])]
        return {**kept, **(metrics_at(hist, max(steps)) if steps else {})}

    def _line(self) -> LineSource | None:
        self.pull_best()  # another host's champion, when the registry line has a better one
        return self.line.source()

    def _plan(self, params: dict[str, Any], carry: Carry | None, line: LineSource | None) -> tuple[RestartPlan, str]:
        if carry is not None and carry.checkpoint is not None:
            why = f"resumes generation {carry.trial} after its preemption ({carry.validations} epochs done)"
            return RestartPlan("resume", carry.checkpoint, (), why), f"generation {carry.trial}: {carry.checkpoint}"
        if line is None or not self.cfg.core_engine.resume_from_checkpoint:
            return RestartPlan(
                "fresh",
                None,
                (),
                "no checkpoint yet" if line is None else "core_engine.resume_from_checkpoint is off",
            ), "none"
        plan = self.scheduler.plan(params, line.path, line.record.hparams)
        head = " (the line's head)" if line.is_head else ""
        source = f"generation {line.record.generation}{head}: {line.path}" if plan.checkpoint else "none"
        return plan, source

    @functools.cached_property
    def line(self) -> LineHead:
        """The line's head (search/line_head.py): where continuations start."""
        opt = self.cfg.optimization
        return LineHead(self.engine, self.registry, self.scheduler.merged, opt.warm_prune_sigmas, opt.line_patience)

    def _judge_by_line(self, trial: Any, plan: RestartPlan, carry: Carry | None, line: LineSource | None) -> None:
        """A generation that continues a line is judged against it (search/warm_line.py): a warm
        start or resume from the line's head or ``best_model.pt`` against that generation's level; a
        preempted one's re-run against what its source was judged against; a carry-on (line_head.py),
        and any exact resume of the line (the same run going on), by nothing but the in-trial rules."""
        source = self.engine.frozen(carry.trial).user_attrs if carry is not None else {}
        resumes_line = carry is None and line is not None and plan.mode == "resume"  # its own hparams
        if trial.user_attrs.get(CARRY_ON_ATTR) or source.get(CARRY_ON_ATTR) or resumes_line:  # the line as one run:
            trial.set_user_attr(CARRY_ON_ATTR, True)  # its reference is for the line effect, not judged by it
        if carry is not None:
            reference = source.get(REFERENCE_ATTR)
        elif plan.mode != "fresh" and line is not None:
            best = line.record
            reference = best.objective if line.level is None else line.level
            if best.pulled_from is None and line.level is None:  # this study's trial: its curve gives the level
                with contextlib.suppress(TunerError):
                    curve = self.engine.frozen(best.generation).intermediate_values
                    reference = line_level([v for _, v in sorted(curve.items())], best.objective)
        else:
            reference = None
        if reference is not None and math.isfinite(float(reference)):
            self.engine.set_reference(trial, float(reference))

    def _epochs(self, plan: RestartPlan, carry: Carry | None, line: LineSource | None) -> tuple[int, int]:
        """``(epochs for the launch, epoch base)``. train.py counts epochs in total and an exact
        resume restores the counter, so a resumed generation needs the checkpoint's epoch on top
        (the base, read from the ``train_state.json`` beside the source checkpoint; other trainers
        have none: per process). A preempted line keeps its base and has done some epochs already."""
        n = self.cfg.generation_epochs()
        if carry is not None and carry.checkpoint is not None:
            total = self.trainer.train_state(Path(carry.checkpoint).parent) is not None
            return epochs_to_run(n, carry.validations, total, carry.epoch_base), carry.epoch_base
        if plan.mode != "resume" or line is None:
            return n, 0
        base = int((self.trainer.train_state(Path(line.record.source).parent) or {}).get("epoch") or 0)
        return n + base, base

    def _inherited_alignment(self, plan: RestartPlan, carry: Carry | None, line: LineSource | None) -> float | None:
        """Where the alignment held at the end of the best generation (``ALIGNMENT_ATTR``), when this one
        starts from its checkpoint with the weights whole (only run, safe or data hparams changed): the
        in-trial collapse rule then counts from the first validation. None for a fresh start, a changed
        architecture or features, a trainer that classes no hparams, or a preempted line's own resume."""
        if carry is not None or plan.checkpoint is None or line is None or not plan.keeps_weights:
            return None
        best = line.record
        try:
            held = self.engine.frozen(best.generation).user_attrs.get(history.ALIGNMENT_ATTR)
        except TunerError:  # a best_model.pt from before this study's trials
            held = None
        held = best.metrics.get("attention_alignment_score") if held is None else held
        return float(held) if held is not None else None

    def _inherit(self, plan: RestartPlan, line: LineSource | None) -> dict[str, float] | None:
        """What a metric on a schedule (``mcd``, ``asr_wer``) reads until this generation measures it: the
        line's latest (the source's last validation over its kept one: an end-of-run ASR is never kept)."""
        if line is None or plan.checkpoint is None:
            return None
        rec = line.record
        return dict(rec.metrics) if rec.pulled_from is not None else self._latest(rec.generation, dict(rec.metrics))

    def _runner(self, trial: Any, run_id: str, inherited: float | None = None) -> GenerationRunner:
        adapter, early = self.cfg.adapter, self.early
        budget = self.cfg.generation_epochs()
        early.new_trial()

        def trial_check(rows: list[dict[str, float]]) -> tuple[str, str] | None:
            if not self.cfg.smart_early_stopping.enabled:
                return None
            try:
                d = early.decide_trial(rows, budget=validation_budget(rows, budget, self.cfg.adapter.epoch_metric),
                                       inherited_alignment=inherited)
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
            objective_fn=functools.partial(objective, weights=objective_weights(self.cfg)),
            sink=self.tracking.sink(run_id, mirror=adapter.metrics_source != "mlflow"),
            notifier=self.notifier,
            cfg=self.runner_cfg,
            clock=self._clock,
            wall_clock=self._wall,
            stop_event=self.stop_event,
            trial_check=trial_check,
            should_stop=lambda: (
                "signal" if self.stop_event.is_set() else (self._budget_reason() if self._over_budget() else None)
            ),
            on_preempted=lambda count, streak: trial.set_user_attr(
                history.PREEMPT_ATTR, {"count": count, **streak.to_dict()}
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
        preemptions = r.preemptions + int(r.state == "interrupted")  # its tuner stopped or died
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
                "preemptions": preemptions,
            },
        )
        self.study.set_user_attr(history.ELAPSED_PREFIX + self.me, self._clock() - self._t0)
        self.engine.tell(trial, r.value, OPTUNA_STATE[r.state])
        tags = {Tag.REASON: r.reason, Tag.EPOCHS: r.validations, Tag.PREEMPTIONS: preemptions}
        if r.state == "interrupted":  # a preemption too: the next session resumes it
            cap = self.cfg.adapter.max_consecutive_preemptions
            requeued = recovery.requeue_preempted(self.study, self.engine.frozen(n), self.wrapper, cap)
            tags[Tag.REQUEUED] = str(requeued).lower()
        self.tracking.finish_child(run_id, r.state, tags)
        for key in ("trainer_s", "stop_s"):
            self.stats[key] += getattr(r, key)
        self.stats["latencies"] += r.latencies
        self.stats["first_metric_s"] += r.first_metric_s
        self.stats["generations"] += 1
        event = {"complete": "generation_finished", "pruned": "generation_pruned"}.get(r.state)
        if event == "generation_finished":
            self.notifier.notify(event, generation=n, value=r.value, reason=r.reason)
            self._register(n, r, params, run_id)
            newest = self.wrapper.latest_checkpoint(self._gen_dir(n))
            if self.line.advance(n, newest) and (head := self.line.head()) and head.get("checkpoint"):
                logger.info("generation %d carries the line on: the next one starts from %s", n, head["checkpoint"])
        elif event:
            self.notifier.notify(event, generation=n, reason=r.reason)
        logger.info("generation %d: %s (%s), value %s", n, r.state, r.reason, r.value)
        if r.refused_input:  # every generation would fail the same way: say why and stop
            raise TunerError(
                f"the trainer refused its input (exit 2) in generation {n}: "
                f"{last_line(self._gen_dir(n) / LOG_FILE)}"
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


def validation_budget(rows: list[dict[str, float]], epochs: int, epoch_metric: str = "epoch") -> int:
    """Validations the generation will log, from its epoch budget: one per epoch, unless the trainer
    validates on a step cadence (train.py's ``val_every_steps``), when its epochs so far per validation
    tell (the early-stop horizon is capped by what is left)."""
    done = rows[-1].get("epoch", rows[-1].get(epoch_metric)) if rows else None
    if done is None or not math.isfinite(done) or done <= 0:
        return epochs
    return max(len(rows), round(len(rows) * epochs / done))
