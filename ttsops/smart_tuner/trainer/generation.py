"""One generation from launch to verdict: follow the trainer's metrics, report the objective each
epoch, prune, detect crashes and stalls, retry.

What counts as an epoch: a record of the adapter's ``epoch_metric`` (train.py logs ``epoch`` at each
validation). It is *ready* once ``val_loss`` has arrived at the same global step, or after
``settle_polls`` further polls (a trainer that logs validation under another step). The metrics of
that validation are, per metric, the latest value at or before its step (a metric on a schedule
that this run has not measured yet, e.g. ``mcd`` or ``asr_wer``, is ``inherited``'s: the line's
latest, as train.py counts its cadence along the line); ``objective_fn`` turns
them into one number, reported to the trial at step = the number of validations *in this
generation* (1, 2, ...). So the pruner compares generations by epochs spent in them, never by the
trainer's global step: a generation warm-started at global step 5000 is at step 1 after its first
epoch, like one started from scratch. A retried trainer continues the count (steps only increase).

The generation's value is the objective at its best validation, and its checkpoint the one the
trainer wrote there (kept as it trains: trainer/kept.py); where that checkpoint cannot be had, the
last validation and the final checkpoint. Log-to-decision latency (trainer's timestamp of the
validation -> the pruner's answer) is kept per report.

After each report the pruner (``engine.report``) and the in-trial early stop (``trial_check``:
``("stop", why)`` ends the generation as complete, ``("prune", why)`` as pruned, and ``why`` becomes
the generation's reason: in its MLflow tags, its alert and the report) may end the generation: the
trainer gets SIGINT and keeps its checkpoint.

Crash detection: a non-zero exit the tuner did not ask for, or no new metric for
``no_metrics_timeout_s`` (the trainer is then stopped). Either is retried ``max_retries`` times from
the generation's own newest checkpoint (exact resume): train.py (it keeps ``train_state.json``)
restores its epoch counter and gets the same ``epochs``; another trainer gets the epochs left.
A preemption (killed from outside: preemption.py) is not a crash: it resumes the same way without
using up ``max_retries``, up to ``max_consecutive_preemptions`` in a row with no validation between.

A generation that continues a preempted one (``run(..., carry=...)``) starts from the carried
objectives (re-reported at their steps, so the pruner sees one curve) and counts on from them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from ttsops.config import AdapterConfig
from ttsops.errors import TunerError
from ttsops.smart_tuner.alerts.notifier import Notifier
from ttsops.smart_tuner.early_stop.attention import held_alignment
from ttsops.smart_tuner.trainer.command import Checkpoint, LaunchSpec
from ttsops.smart_tuner.trainer.kept import KeptCheckpoint, Validation
from ttsops.smart_tuner.trainer.metrics_store import MetricRecord, MetricsStore
from ttsops.smart_tuner.trainer.preemption import Carry, Streak, epochs_to_run, preempted_by
from ttsops.smart_tuner.trainer.trainer_wrapper import TrainerProcess, TrainerWrapper
from ttsops.smart_tuner.trainer.validations import ValidationTracker, metrics_at

logger = logging.getLogger(__name__)


class Watcher(Protocol):
    def poll_once(self) -> list[MetricRecord]: ...


class Engine(Protocol):  # the part of OptimizationEngine a generation uses
    def report(self, trial: Any, value: float, step: int) -> bool: ...

    def heartbeat(self, trial: Any) -> None: ...

    def prune_reason(self, trial: Any) -> str | None: ...  # why a rule of its own pruned it, if one did


class RunSink(Protocol):
    """Where the generation's own results go besides Optuna (the MLflow child run)."""

    def records(self, records: list[MetricRecord]) -> None: ...

    def objective(self, value: float, global_step: int, index: int) -> None: ...


@dataclass
class GenerationResult:
    state: str  # "complete" | "pruned" | "failed" | "interrupted"
    value: float | None
    validations: int
    checkpoint: Path | None
    metrics: dict[str, float]
    attempts: int
    reason: str
    trainer_s: float = 0.0  # trainer processes' lifetimes, summed over attempts
    stop_s: float = 0.0  # time spent stopping trainers (SIGINT -> exit)
    latencies: list[float] = field(default_factory=list)  # log -> decision, per report
    first_metric_s: list[float] = field(default_factory=list)  # launch -> first record, per attempt
    exit_codes: list[int] = field(default_factory=list)  # of the attempts that crashed
    alignment_held: float | None = None  # where the alignment held at the end (median of the last 5 scores)
    preemptions: int = 0  # trainer processes of this generation killed from outside (resumed in place)

    @property
    def refused_input(self) -> bool:
        """Every attempt exited 2 before logging anything: the contract's "bad input" exit."""
        return bool(self.exit_codes) and set(self.exit_codes) == {2} and not self.first_metric_s


@dataclass(frozen=True)
class RunnerConfig:
    poll_s: float = 0.5
    heartbeat_s: float = 10.0
    settle_polls: int = 2


DEFAULT_RUNNER = RunnerConfig()


class _State:
    def __init__(self, spec: LaunchSpec, now: float, kept: KeptCheckpoint) -> None:
        self.spec = spec
        self.kept = kept
        self.poll = 0
        self.validations = 0
        self.value: float | None = None
        self.metrics: dict[str, float] = {}
        self.inherited: dict[str, float] = {}  # what a metric this run has not measured yet reads
        self.last_progress = now
        self.launched_at = now
        self.saw_metric = False
        self.attempt = 0  # launches after the first (crash retries and preemption resumes)
        self.retries = 0  # crash retries only (max_retries)
        self.carried = 0  # validations taken over from a preempted generation
        self.streak = Streak()
        self.rows: list[dict[str, float]] = []  # metrics of each validation, in order
        self.prune_reason = "the pruner stopped it"
        self.early_stop: str | None = None  # the in-trial stop's explanation
        self.proc: TrainerProcess | None = None
        self.result = GenerationResult("failed", None, 0, None, {}, 1, "")


class GenerationRunner:
    """Runs one generation; everything slow or external is passed in."""

    def __init__(
        self,
        wrapper: TrainerWrapper,
        engine: Engine,
        store: MetricsStore,
        adapter: AdapterConfig,
        *,
        objective_fn: Callable[[dict[str, float]], float],
        sink: RunSink,
        notifier: Notifier,
        cfg: RunnerConfig = DEFAULT_RUNNER,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        stop_event: threading.Event | None = None,
        should_stop: Callable[[], str | None] = lambda: None,  # None, "signal", or why the budget is spent
        trial_check: Callable[[list[dict[str, float]]], tuple[str, str] | None] = lambda rows: None,
        on_preempted: Callable[[int, Streak], None] = lambda count, streak: None,
    ) -> None:
        self.wrapper, self.engine, self.store, self.adapter = wrapper, engine, store, adapter
        self.objective_fn, self.sink, self.notifier, self.cfg = objective_fn, sink, notifier, cfg
        self._clock, self._wall = clock, wall_clock
        self._event = stop_event or threading.Event()
        self.should_stop = should_stop
        self.trial_check = trial_check  # in-trial early stop: ("stop" | "prune", why) or None per validation
        self.on_preempted = on_preempted  # (preemptions so far, streak): the tuner keeps them in the trial
        names = {adapter.epoch_metric, adapter.metric_map.get(adapter.epoch_metric, adapter.epoch_metric)}
        self._epoch_names = names

    def run(self, trial: Any, spec: LaunchSpec, watcher: Watcher, carry: Carry | None = None,
            inherited: Mapping[str, float] | None = None) -> GenerationResult:
        """``inherited``: the line's latest metrics where the trainer starts (a carry's own when None)."""
        kept = KeptCheckpoint(Path(spec.gen_dir), self.wrapper.checkpoint_at, self.wrapper.train_state)
        st = _State(spec, self._clock(), kept)
        st.inherited = dict(inherited if inherited is not None else carry.metrics if carry is not None else {})
        if carry is not None:
            self._take_over(trial, st, carry)
        tracker = ValidationTracker(self._epoch_names, self.cfg.settle_polls)
        proc = self.wrapper.launch(spec)
        try:
            return self._loop(trial, st, tracker, proc, watcher)
        except Exception:
            current = st.proc or proc
            if current.running:  # never leave a trainer behind on a tuner error
                self.wrapper.stop(current)
            raise

    def _loop(
        self, trial: Any, st: _State, tracker: ValidationTracker, proc: TrainerProcess, watcher: Watcher
    ) -> GenerationResult:
        next_beat = self._clock() + self.cfg.heartbeat_s
        while True:
            st.proc = proc
            if self._clock() >= next_beat:
                self.engine.heartbeat(trial)
                next_beat = self._clock() + self.cfg.heartbeat_s
            self._poll(watcher, tracker, st, proc)
            st.kept.try_keep()
            if self._report(trial, tracker, st):
                return self._finish(st, proc, "pruned", st.prune_reason)
            if st.early_stop is not None:
                return self._finish(st, proc, "complete", f"in-trial early stop: {st.early_stop}")
            reason = self.should_stop()
            if reason:
                return self._interrupt(trial, st, proc, watcher, tracker, reason)
            code = proc.returncode()
            if code is not None or self._stalled(st):
                nxt = self._ended(trial, st, proc, watcher, tracker, code)
                if nxt is None:
                    return st.result
                proc = nxt
                continue
            self._event.wait(self.cfg.poll_s)

    def _take_over(self, trial: Any, st: _State, carry: Carry) -> None:
        """Start where the preempted generation ``carry`` describes left off."""
        for step, value in sorted(carry.values.items()):
            self.engine.report(trial, value, step)  # its verdicts were acted on (or not) back then
        st.validations = st.carried = carry.validations
        st.value, st.metrics, st.streak = carry.value, dict(carry.metrics), carry.streak

    # --- metrics ----------------------------------------------------------------------------------
    def _poll(
        self, watcher: Watcher, tracker: ValidationTracker, st: _State, proc: TrainerProcess | None
    ) -> None:
        st.poll += 1
        try:
            records = watcher.poll_once()
        except TunerError as e:  # a store or server briefly away: the stall timer decides
            logger.warning("generation %d: metrics poll failed: %s", st.spec.generation, e)
            return
        if not records:
            return
        now = self._clock()
        if not st.saw_metric and proc is not None:
            st.saw_metric = True
            st.result.first_metric_s.append(now - st.launched_at)
        st.last_progress = now
        self.store.add(records)
        tracker.feed(records, st.poll)
        self.sink.records(records)

    def _report(self, trial: Any, tracker: ValidationTracker, st: _State, force: bool = False) -> bool:
        """Report every ready validation; True as soon as the pruner says stop."""
        ready = tracker.ready(st.poll, force)
        if not ready:
            return False
        history = self.store.history(st.spec.generation)
        for step, logged_at in ready:
            metrics = {**st.inherited, **metrics_at(history, step)}
            value = float(self.objective_fn(metrics))
            st.validations += 1
            st.value, st.metrics = value, metrics
            st.rows.append(metrics)
            st.kept.offer(Validation(st.validations, len(st.rows), step, value, metrics))
            prune = self.engine.report(trial, value, st.validations)
            st.result.latencies.append(max(0.0, self._wall() - logged_at))
            self.sink.objective(value, step, st.validations)
            logger.info(
                "generation %d epoch %d (step %d): objective %.5g%s",
                st.spec.generation,
                st.validations,
                step,
                value,
                " -> prune" if prune else "",
            )
            if prune:
                st.prune_reason = self.engine.prune_reason(trial) or st.prune_reason
                return True
            verdict = None if force else self.trial_check(st.rows)
            if verdict is not None and verdict[0] == "prune":
                st.prune_reason = f"in-trial early stop: {verdict[1]}"
                return True
            if verdict is not None and verdict[0] == "stop":
                st.early_stop = verdict[1]
        return False

    def _stalled(self, st: _State) -> bool:
        return self._clock() - st.last_progress > self.adapter.no_metrics_timeout_s

    # --- endings ----------------------------------------------------------------------------------
    def _stop(self, st: _State, proc: TrainerProcess) -> None:
        res = self.wrapper.stop(proc)
        st.result.stop_s += res.seconds

    def _drain(self, trial: Any, watcher: Watcher, tracker: ValidationTracker, st: _State) -> bool:
        self._poll(watcher, tracker, st, None)
        return self._report(trial, tracker, st, force=True)

    def _finish(self, st: _State, proc: TrainerProcess, state: str, reason: str) -> GenerationResult:
        if proc.running:
            self._stop(st, proc)
        st.result.trainer_s += self._clock() - st.launched_at
        r = st.result
        r.state, r.reason, r.value, r.validations = state, reason, st.value, st.validations
        r.metrics, r.attempts = dict(st.metrics), st.attempt + 1
        rows = st.rows
        r.checkpoint = self.wrapper.latest_checkpoint(st.spec.gen_dir)
        st.kept.try_keep()
        if state == "complete" and (kept := st.kept.kept) is not None:  # the best validation's state
            r.value, r.metrics, r.checkpoint, rows = kept.validation.value, dict(kept.validation.metrics), kept.path, \
                rows[: kept.validation.rows]
        r.alignment_held = held_alignment([row.get("attention_alignment_score", float("nan")) for row in rows])
        if state == "complete" and st.value is None:
            r.state, r.reason = "failed", f"{reason}, but no validation was ever logged"
        return r

    def _interrupt(self, trial: Any, st: _State, proc: TrainerProcess, watcher: Watcher,
                   tracker: ValidationTracker, reason: str) -> GenerationResult:
        self._stop(st, proc)
        self._drain(trial, watcher, tracker, st)
        if reason != "signal" and st.value is not None:  # the study's budget: it completes with what it reached
            return self._finish(st, proc, "complete", f"stopped: {reason}")
        return self._finish(st, proc, "interrupted", f"tuner stopping ({reason})")

    def _ended(self, trial: Any, st: _State, proc: TrainerProcess, watcher: Watcher,
               tracker: ValidationTracker, code: int | None) -> TrainerProcess | None:
        """The trainer exited or stalled: finish the generation (None) or the retried process."""
        preempted = preempted_by(code, self.wrapper.train_state(st.spec.gen_dir))
        if preempted:
            return self._preempted(trial, st, proc, watcher, tracker, preempted)
        if code is None:
            self._stop(st, proc)
            why = f"no new metrics for {self.adapter.no_metrics_timeout_s:.0f} s"
        elif code == 0:
            pruned = self._drain(trial, watcher, tracker, st)
            st.result = self._finish(
                st,
                proc,
                "pruned" if pruned else "complete",
                st.prune_reason if pruned else "trainer finished",
            )
            return None
        else:
            why = f"exit code {code}" + (" (killed by a signal)" if code < 0 else "")
            st.result.exit_codes.append(code)
        if self._drain(trial, watcher, tracker, st):
            st.result = self._finish(st, proc, "pruned", "pruned at its last epoch")
            return None
        will_retry = st.retries < self.adapter.max_retries
        logger.warning(
            "generation %d: trainer crashed (%s)%s",
            st.spec.generation,
            why,
            ", retrying" if will_retry else "",
        )
        self.notifier.notify("crash", generation=st.spec.generation, error=why, will_retry=will_retry)
        if not will_retry:
            st.result = self._finish(st, proc, "failed", f"trainer crashed: {why}")
            return None
        st.retries += 1
        return self._retry(st, proc)

    def _preempted(self, trial: Any, st: _State, proc: TrainerProcess, watcher: Watcher,
                   tracker: ValidationTracker, why: str) -> TrainerProcess | None:
        """Killed from outside: resume from the newest checkpoint (not a crash, no retry used up)."""
        if self._drain(trial, watcher, tracker, st):
            st.result = self._finish(st, proc, "pruned", "pruned at its last epoch")
            return None
        st.result.preemptions += 1
        st.streak = st.streak.after(st.validations)
        self.on_preempted(st.result.preemptions, st.streak)
        cap = self.adapter.max_consecutive_preemptions
        resume = not st.streak.over(cap)
        logger.warning("generation %d: trainer preempted (%s)%s", st.spec.generation, why,
                       ", resuming from its checkpoint" if resume else f", {st.streak.count} times in a row")
        self.notifier.notify("preempted", generation=st.spec.generation, why=why, will_resume=resume)
        if not resume:
            st.result = self._finish(
                st, proc, "failed", f"preempted {st.streak.count} times in a row without a validation "
                f"(adapter.max_consecutive_preemptions={cap}); last: {why}")
            return None
        return self._retry(st, proc)

    def _retry(self, st: _State, proc: TrainerProcess) -> TrainerProcess:
        st.result.trainer_s += self._clock() - st.launched_at
        st.attempt += 1
        ckpt = self.wrapper.latest_checkpoint(st.spec.gen_dir)
        start = Checkpoint("resume", ckpt) if ckpt else st.spec.checkpoint
        # train.py (it keeps train_state.json) restores its epoch counter on resume and counts to
        # ``epochs`` in total; another trainer counts per process and gets what is left
        total = self.wrapper.train_state(st.spec.gen_dir) is not None
        own = st.validations - st.carried
        left = None if st.spec.epochs is None else epochs_to_run(st.spec.epochs, own, total)
        spec = replace(st.spec, checkpoint=start, attempt=st.attempt, epochs=left)
        self.notifier.notify(
            "retry", generation=st.spec.generation, attempt=st.attempt, max_attempts=self.adapter.max_retries
        )
        st.launched_at = st.last_progress = self._clock()
        st.saw_metric = False
        return self.wrapper.launch(spec)
