"""How a restarted tuner picks up a study a dead one left behind, and how a preempted generation
is queued again.

A RUNNING trial whose worker is dead (same host: the pid is gone or recycled) or whose heartbeat
is stale (another host) is *interrupted*: the trainer it left behind (found through the pid file
in its generation directory) is stopped with the usual SIGINT escalation (it writes a checkpoint),
its MLflow child run is marked KILLED, and it is a **preemption** (trainer/preemption.py): the
trial is marked FAIL (shown as PREEMPTED) and re-queued (``requeue_preempted``).

``requeue_preempted`` is also how the tuner re-queues a generation it stopped itself (SIGINT/SIGTERM
to the tuner). The params go back with ``enqueue_trial`` (``retry_of``/``retry_history`` user
attrs, like Optuna's ``RetryHeartbeatStaleTrialCallback``) plus ``RESUME_ATTR``: which generation
directory holds the line's newest checkpoint, the preemption streak and the epoch base, so the
re-queued trial resumes from that checkpoint and carries on the objectives reported so far. A
re-queued FAIL does not count against ``n_trials``. Beyond ``max_consecutive_preemptions`` in a row
(no validation between them) it is not re-queued: it stays FAIL and counts. Completed generations
are untouched.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, Trial, TrialState

from ttsops.smart_tuner.study.history import (
    GEN_DIR_ATTR,
    PLAN_ATTR,
    PREEMPT_ATTR,
    RESULT_ATTR,
    RESUME_ATTR,
    RETRY_HISTORY_ATTR,
    RETRY_OF_ATTR,
    RUN_ID_ATTR,
    WORKER_ATTR,
)
from ttsops.smart_tuner.trainer.preemption import Streak
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
    preemptions: int = 1  # of the trial, this one included


def recover_interrupted(
    study: Any,
    wrapper: TrainerWrapper,
    stale: Iterable[FrozenTrial],
    *,
    me: str,
    max_preemptions: int = 3,
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
        in_place = int((t.user_attrs.get(PREEMPT_ATTR) or {}).get("count", 0))
        result: dict[str, Any] = {
            "state": "interrupted", "reason": f"its tuner ({worker}) died", "preemptions": in_place + 1
        }
        try:
            Trial(study, t._trial_id).set_user_attr(RESULT_ATTR, result)
            study.tell(t.number, state=TrialState.FAIL)
        except UpdateFinishedTrialError:
            continue  # another worker got there first
        requeue = requeue_preempted(study, t, wrapper, max_preemptions)
        item = Interrupted(t.number, t.user_attrs.get(RUN_ID_ATTR), orphan.pid if orphan else None, requeue,
                           result["preemptions"])
        logger.warning(
            "trial %d was interrupted (tuner %s gone): a preemption%s",
            t.number,
            worker,
            ", re-queued to resume from its checkpoint" if requeue else f" ({max_preemptions} in a row: FAIL)",
        )
        on_recovered(item)
        out.append(item)
    return out


def requeue_preempted(study: Any, t: FrozenTrial, wrapper: TrainerWrapper, max_preemptions: int) -> bool:
    """Queue the preempted trial ``t`` (already FAIL) again to resume from the newest checkpoint of
    its line; False (nothing queued) once the streak is over ``max_preemptions``."""
    before = t.user_attrs.get(PREEMPT_ATTR) or t.user_attrs.get(RESUME_ATTR)
    streak = Streak.from_dict(before).after(len(t.intermediate_values))
    if streak.over(max_preemptions):
        return False
    resume = t.user_attrs.get(RESUME_ATTR) or {}
    gen_dir = t.user_attrs.get(GEN_DIR_ATTR)
    if not (gen_dir and wrapper.latest_checkpoint(gen_dir)):  # none of its own yet: its source's
        gen_dir = resume.get("gen_dir")
    history = [*t.user_attrs.get(RETRY_HISTORY_ATTR, []), t.number]
    carry = {
        "trial": t.number,
        "gen_dir": gen_dir,
        **streak.to_dict(),
        "epoch_base": int((t.user_attrs.get(PLAN_ATTR) or {}).get("epoch_base", 0)),
    }
    study.enqueue_trial(
        t.params,
        user_attrs={RETRY_OF_ATTR: history[0], RETRY_HISTORY_ATTR: history, RESUME_ATTR: carry},
        skip_if_exists=False,
    )
    return True
