"""How a restarted tuner picks up a study a dead one left behind.

A RUNNING trial whose worker is dead (same host: the pid is gone or recycled) or whose heartbeat
is stale (another host) is *interrupted*: the trainer it left behind (found through the pid file
in its generation directory) is stopped with the usual SIGINT escalation, the trial is marked
FAIL, its params are re-queued with ``enqueue_trial`` (``retry_of``/``retry_history`` user attrs,
like Optuna's ``RetryHeartbeatStaleTrialCallback``; at most ``max_requeue`` times) and its MLflow
child run is marked KILLED. Completed generations are untouched.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from ttsops.smart_tuner.study.history import (
    GEN_DIR_ATTR,
    RETRY_HISTORY_ATTR,
    RETRY_OF_ATTR,
    RUN_ID_ATTR,
    WORKER_ATTR,
)
from ttsops.smart_tuner.trainer.trainer_wrapper import TrainerWrapper, pid_alive, proc_start_ticks

logger = logging.getLogger(__name__)


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
