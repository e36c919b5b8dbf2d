"""What a study remembers across tuner processes, and how a restarted tuner picks it up.

All of it lives in the Optuna storage (trial and study user attrs), so any worker that opens the
study sees it:

* every trial records its worker (``host:pid:start-ticks``), its generation directory and its
  MLflow child run as soon as it is asked;
* a RUNNING trial whose worker is dead (same host: the pid is gone or recycled) or whose heartbeat
  is stale (another host) is *interrupted*: the trainer it left behind (found through the pid file
  in its generation directory) is stopped with the usual SIGINT escalation, the trial is marked
  FAIL, its params are re-queued with ``enqueue_trial`` (``retry_of``/``retry_history`` user attrs,
  like Optuna's ``RetryHeartbeatStaleTrialCallback``; at most ``max_requeue`` times) and its MLflow
  child run is marked KILLED. Completed generations are untouched;
* ``n_trials`` counts finished generations (COMPLETE, PRUNED, FAIL) except FAILs that were
  re-queued, plus generations running right now (so parallel workers do not overshoot);
* the wall-clock budget is the tuner time summed over sessions and workers (``ttsops.elapsed.<worker>``
  per worker, so no two processes write the same attr): a resumed study continues its budget.

Also here: the generation table, atomic writes and file locks for workers sharing a study
directory, and the CLI's signal handling. Alerts go through a tiny ``Notifier`` protocol (``notify(event, **payload)``), log-only by default;
``alert_notifier`` adapts ``alert_manager.AlertManager`` to it.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from ttsops.smart_tuner.trainer_wrapper import TrainerWrapper, pid_alive, proc_start_ticks

logger = logging.getLogger(__name__)

WORKER_ATTR = "ttsops.worker"
GEN_DIR_ATTR = "ttsops.gen_dir"
RUN_ID_ATTR = "ttsops.mlflow_run_id"
CKPT_ATTR = "ttsops.checkpoint"
METRICS_ATTR = "ttsops.metrics"
ALIGNMENT_ATTR = "ttsops.alignment_held"  # median of the generation's last 5 alignment scores
RESULT_ATTR = "ttsops.result"
PLAN_ATTR = "ttsops.plan"
ELAPSED_PREFIX = "ttsops.elapsed."
RETRY_OF_ATTR = "retry_of"  # the names opt_engine.recover_stale uses
RETRY_HISTORY_ATTR = "retry_history"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def worker_id() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{proc_start_ticks(pid)}"


def worker_is_dead_here(worker: str | None) -> bool:
    """True if ``worker`` ran on this host and that process is gone (False: alive or elsewhere)."""
    if not worker:
        return False
    parts = worker.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    ticks = None if parts[2] == "None" else parts[2]
    return not pid_alive(int(parts[1]), ticks)


@dataclass(frozen=True)
class Interrupted:
    trial: int
    run_id: str | None
    orphan_pid: int | None
    requeued: bool


def recover_interrupted(
    study: Any,
    wrapper: TrainerWrapper,
    stale: Iterable[FrozenTrial],
    *,
    me: str,
    max_requeue: int = 1,
    on_recovered: Callable[[Interrupted], None] = lambda _: None,
) -> list[Interrupted]:
    """Finish the RUNNING trials nobody runs any more (see the module docstring)."""
    stale_numbers = {t.number for t in stale}
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get(WORKER_ATTR)
        if worker == me or not (worker_is_dead_here(worker) or t.number in stale_numbers):
            continue
        gen_dir = t.user_attrs.get(GEN_DIR_ATTR)
        orphan = wrapper.find_orphan(gen_dir) if gen_dir else None
        if orphan is not None:
            logger.warning(
                "trial %d: stopping the trainer its dead tuner left running (pid %d)", t.number, orphan.pid
            )
            wrapper.stop(orphan)
        try:
            study.tell(t.number, state=TrialState.FAIL)
        except UpdateFinishedTrialError:
            continue  # another worker got there first
        history = [*t.user_attrs.get(RETRY_HISTORY_ATTR, []), t.number]
        requeue = len(history) <= max_requeue
        if requeue:
            study.enqueue_trial(
                t.params,
                user_attrs={RETRY_OF_ATTR: history[0], RETRY_HISTORY_ATTR: history},
                skip_if_exists=False,
            )
        item = Interrupted(t.number, t.user_attrs.get(RUN_ID_ATTR), orphan.pid if orphan else None, requeue)
        logger.warning(
            "trial %d was interrupted (tuner %s gone): marked FAIL%s",
            t.number,
            worker,
            ", params re-queued" if requeue else "",
        )
        on_recovered(item)
        out.append(item)
    return out


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


def elapsed_s(study_attrs: dict[str, Any]) -> float:
    return sum(float(v) for k, v in study_attrs.items() if k.startswith(ELAPSED_PREFIX))


def generation_objectives(trials: list[FrozenTrial]) -> tuple[list[float], list[float]]:
    """Per finished generation in trial order: objective (NaN unless COMPLETE) and the alignment
    it held at the end (``ALIGNMENT_ATTR``, the median of its last 5 scores; studies written before
    it existed: the last score; NaN if unknown); re-queued FAILs are left out."""
    again = requeued_numbers(trials)
    values, align = [], []
    for t in sorted(trials, key=lambda t: t.number):
        if t.state not in FINISHED or (t.state == TrialState.FAIL and t.number in again):
            continue
        ok = t.state == TrialState.COMPLETE and t.value is not None
        values.append(float(t.value) if ok else math.nan)
        a = t.user_attrs.get(ALIGNMENT_ATTR)
        if a is None:
            a = (t.user_attrs.get(METRICS_ATTR) or {}).get("attention_alignment_score")
        align.append(float(a) if a is not None else math.nan)
    return values, align


# --- reporting ----------------------------------------------------------------------------------
def generation_rows(trials: list[Any]) -> list[dict[str, Any]]:
    rows = []
    for t in sorted(trials, key=lambda t: t.number):
        plan, res = t.user_attrs.get(PLAN_ATTR, {}), t.user_attrs.get(RESULT_ATTR, {})
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name,
                "value": t.value,
                "epochs": len(t.intermediate_values),
                "start": plan.get("mode", ""),
                "warm_start_source": plan.get("source", ""),
                "retry_of": t.user_attrs.get(RETRY_OF_ATTR),
                "reason": res.get("reason", ""),
                "params": dict(t.params),
                "seconds": round(t.duration.total_seconds(), 1) if t.duration else None,
            }
        )
    return rows


def dataset_version(dataset: str | None) -> str | None:
    if not dataset:
        return None
    try:  # the DVC version when the dataset is versioned, else a content fingerprint
        from ttsops.data.dataset import dataset_fingerprint
        from ttsops.data.versioning import dataset_version as dvc_version

        return dvc_version(dataset) or f"sha256:{dataset_fingerprint(dataset)}"
    except (OSError, ImportError) as e:
        logger.warning("dataset %s: no version fingerprint (%s)", dataset, e)
        return None


# --- files, signals and the CLI's table ------------------------------------------------------------
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


def last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return f"(no log at {path})"
    return f"{lines[-1]} (log: {path})" if lines else f"(empty log {path})"


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


# --- CLI ------------------------------------------------------------------------------------------
@contextmanager
def graceful_signals(stop: threading.Event) -> Iterator[None]:
    """First SIGINT/SIGTERM: stop cleanly; the second: the default action (exit at once)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: Any) -> None:
        logger.warning("signal %d: stopping the study after the running generation is stopped", signum)
        stop.set()
        for s, h in old.items():
            signal.signal(s, h)

    for s in old:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def print_summary(s: StudySummary) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"study {s.study}: {s.status} ({s.stop_reason})")
    for col in ("trial", "state", "value", "epochs", "start", "warm-start source", "params", "s"):
        table.add_column(col)
    for r in s.rows:
        value = "" if r["value"] is None else f"{r['value']:.5g}"
        params = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["params"].items()
        )
        table.add_row(
            str(r["trial"]),
            r["state"],
            value,
            str(r["epochs"]),
            r["start"],
            r["warm_start_source"].split(":")[0],
            params,
            str(r["seconds"] or ""),
        )
    Console().print(table)
    if s.best_trial is not None:
        Console().print(
            f"best: trial {s.best_trial}, objective {s.best_value:.5g}; {s.study_dir / 'best_model.pt'}"
        )


# --- alerts -------------------------------------------------------------------------------------
class Notifier(Protocol):
    def notify(self, event: str, **payload: Any) -> None: ...


class LogNotifier:
    """Alerts off or not configured: one log line per event."""

    def __init__(self, study: str) -> None:
        self.study = study

    def notify(self, event: str, **payload: Any) -> None:
        logger.info(
            "study %s: %s %s",
            self.study,
            event,
            ", ".join(
                f"{k}=<{len(v)} bytes>" if isinstance(v, bytes) else f"{k}={v}" for k, v in payload.items()
            ),
        )

    def close(self) -> None:
        return None


class AlertNotifier:
    """``notify(event, **payload)`` -> the AlertManager's builder of that name (``new_best``, ...)."""

    def __init__(self, manager: Any, study: str) -> None:
        self.manager, self.study = manager, study

    def notify(self, event: str, **payload: Any) -> None:
        fn = getattr(self.manager, event, None)
        try:
            if fn is None:
                raise TypeError(f"no alert builder {event!r}")
            fn(self.study, **payload)
        except Exception as e:  # alerts never break the study
            logger.warning("alert %s not sent: %s", event, e)

    def close(self) -> None:
        self.manager.close()


def alert_notifier(alerts_cfg: Any, study: str) -> AlertNotifier | LogNotifier:
    try:
        from ttsops.smart_tuner.alert_manager import AlertManager
    except ImportError:  # pragma: no cover - alert_manager ships with the package
        return LogNotifier(study)
    return AlertNotifier(AlertManager(alerts_cfg), study)
