"""What a study remembers across tuner processes: the trial and study user attrs every worker
reads, and the views the loop takes of them.

All of it lives in the Optuna storage, so any worker that opens the study sees it: every trial
records its worker (``host:pid:start-ticks``), its generation directory and its MLflow child run
as soon as it is asked, then its plan, result, metrics and checkpoint.

* ``n_trials`` counts finished generations (COMPLETE, PRUNED, FAIL) except FAILs that were
  re-queued (preempted: their resumed run counts instead), plus generations running right now (so
  parallel workers do not overshoot);
* preemptions (trainer/preemption.py) are counted per trial in its result (``preemptions``): the
  trainer killed from outside and resumed in place, plus one when the trial's tuner died or stopped
  while it ran (it is then FAIL, shown as PREEMPTED, and re-queued with ``RESUME_ATTR``);
* the wall-clock budget is the tuner time summed over sessions and workers (``ttsops.elapsed.<worker>``
  per worker, so no two processes write the same attr): a resumed study continues its budget.

How a restarted tuner finishes what a dead one left running is ``recovery.py``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial, TrialState

WORKER_ATTR = "ttsops.worker"
GEN_DIR_ATTR = "ttsops.gen_dir"
RUN_ID_ATTR = "ttsops.mlflow_run_id"
CKPT_ATTR = "ttsops.checkpoint"
METRICS_ATTR = "ttsops.metrics"
ALIGNMENT_ATTR = "ttsops.alignment_held"  # median of the generation's last 5 alignment scores
RESULT_ATTR = "ttsops.result"
PLAN_ATTR = "ttsops.plan"
ELAPSED_PREFIX = "ttsops.elapsed."
PREEMPT_ATTR = "ttsops.preemption"  # while it runs: {"count": in-place preemptions, "streak", "at"}
RESUME_ATTR = "ttsops.resume"  # a re-queued preempted trial: {"trial", "gen_dir", "streak", "at", "epoch_base"}
RETRY_OF_ATTR = "retry_of"  # the names opt_engine.recover_stale uses
RETRY_HISTORY_ATTR = "retry_history"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def requeued_numbers(trials: Iterable[FrozenTrial]) -> set[int]:
    out: set[int] = set()
    for t in trials:
        out.update(int(n) for n in t.user_attrs.get(RETRY_HISTORY_ATTR, []))
    return out


def generations_used(trials: list[FrozenTrial]) -> int:
    """What counts against ``n_trials``: finished minus re-queued FAILs, plus RUNNING ones."""
    again = requeued_numbers(trials)
    done = sum(
        1 for t in trials if t.state in FINISHED and not (t.state == TrialState.FAIL and t.number in again)
    )
    return done + sum(1 for t in trials if t.state == TrialState.RUNNING)


def preemptions(trials: Iterable[FrozenTrial]) -> int:
    """Preemptions in the study: the sum of every trial's own (its result's ``preemptions``)."""
    return sum(int((t.user_attrs.get(RESULT_ATTR) or {}).get("preemptions", 0)) for t in trials)


def shown_state(t: FrozenTrial, requeued: set[int]) -> str:
    """The trial's state for people: PREEMPTED for a FAIL that was preempted and re-queued (it does
    not count as a failure), else Optuna's state name."""
    res = t.user_attrs.get(RESULT_ATTR) or {}
    if t.state == TrialState.FAIL and t.number in requeued and res.get("state") == "interrupted":
        return "PREEMPTED"
    return t.state.name


def elapsed_s(study_attrs: dict[str, Any]) -> float:
    return sum(float(v) for k, v in study_attrs.items() if k.startswith(ELAPSED_PREFIX))


def finished_generations(trials: list[FrozenTrial], *, completed_only: bool = False) -> list[FrozenTrial]:
    """The finished generations in trial order, re-queued FAILs left out (with ``completed_only``,
    every generation that did not complete): what ``generation_objectives`` lists, one per value."""
    again = requeued_numbers(trials)
    return [t for t in sorted(trials, key=lambda t: t.number)
            if t.state in FINISHED and not (t.state == TrialState.FAIL and t.number in again)
            and (not completed_only or t.state == TrialState.COMPLETE)]


def generation_objectives(
    trials: list[FrozenTrial], *, completed_only: bool = False
) -> tuple[list[float], list[float]]:
    """Per finished generation in trial order: objective (NaN unless COMPLETE) and the alignment
    it held at the end (``ALIGNMENT_ATTR``, the median of its last 5 scores; studies written before
    it existed: the last score; NaN if unknown); re-queued FAILs are left out, and with
    ``completed_only`` every generation that did not complete."""
    values, align = [], []
    for t in finished_generations(trials, completed_only=completed_only):
        ok = t.state == TrialState.COMPLETE and t.value is not None
        values.append(float(t.value) if ok and t.value is not None else math.nan)
        a = t.user_attrs.get(ALIGNMENT_ATTR)
        if a is None:
            a = (t.user_attrs.get(METRICS_ATTR) or {}).get("attention_alignment_score")
        align.append(float(a) if a is not None else math.nan)
    return values, align


def kept_metric(trials: list[FrozenTrial], name: str) -> list[float]:
    """Per trial given, the metric its kept validation had (``METRICS_ATTR``; NaN if unknown)."""
    return [float((t.user_attrs.get(METRICS_ATTR) or {}).get(name, math.nan)) for t in trials]


# --- reporting ----------------------------------------------------------------------------------
def generation_rows(trials: list[Any]) -> list[dict[str, Any]]:
    rows, again = [], requeued_numbers(trials)
    for t in sorted(trials, key=lambda t: t.number):
        plan, res = t.user_attrs.get(PLAN_ATTR, {}), t.user_attrs.get(RESULT_ATTR, {})
        rows.append(
            {
                "trial": t.number,
                "state": shown_state(t, again),
                "value": t.value,
                "epochs": len(t.intermediate_values),
                "start": plan.get("mode", ""),
                "warm_start_source": plan.get("source", ""),
                "retry_of": t.user_attrs.get(RETRY_OF_ATTR),
                "preemptions": int(res.get("preemptions", 0)),
                "reason": res.get("reason", ""),
                "params": dict(t.params),
                "seconds": round(t.duration.total_seconds(), 1) if t.duration else None,
            }
        )
    return rows


@dataclass
class StudySummary:
    study: str
    status: str  # "finished" | "interrupted"
    stop_reason: str
    study_dir: Path
    best_trial: int | None
    best_value: float | None
    rows: list[dict[str, Any]]
    stats: dict[str, Any] = field(default_factory=dict)
