"""OptimizationEngine: Optuna (ask-and-tell) with the config's samplers, pruners and storage.

Samplers and pruners: ``ttsops/smart_tuner/search/samplers.py`` (``SAMPLERS``, ``PRUNERS``).

Storage: any Optuna RDB URL (``sqlite:///...``, ``postgresql://...``) or ``journal:PATH``
(JournalFileBackend: safe for several processes on one host or a shared POSIX file system).
``sqlite:///`` is for ONE worker: parallel writers hit "database is locked".
The study is created with ``load_if_exists=True``, so starting again resumes it.

Traps designed around (docs/tuner.md has the long version):

* Optuna's heartbeat only works inside ``study.optimize``; with ask-and-tell the tuner keeps its own:
  ``heartbeat(trial)`` stamps a ``heartbeat`` user attr, ``stale_running_trials`` finds RUNNING
  trials whose stamp is too old, ``recover_stale`` fails them and re-queues their params (like
  ``RetryHeartbeatStaleTrialCallback``).
* ``Trial.report`` silently keeps the first value of a repeated step. ``report`` here refuses a step
  that is not above the last one reported to that trial (warning, nothing stored). The tuner
  reports the epoch *within the generation* (1, 2, ...) as the step, so a generation warm-started
  from global step 5000 is compared with one started from 0 at equal training spent in the trial.
* With Hyperband every bracket is its own sub-study for the sampler, so each bracket pays
  ``n_startup_trials`` random trials before TPE models anything.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
import zlib
from collections.abc import Callable
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, Trial, TrialState

from ttsops.config import OptimizationConfig, ParamSpec
from ttsops.errors import ConfigError, TunerError
from ttsops.smart_tuner.search.baseline import BASELINE_ATTR
from ttsops.smart_tuner.search.samplers import PRUNERS, SAMPLERS, default_n_brackets
from ttsops.smart_tuner.search.warm_line import (
    CARRY_ON_ATTR,
    REFERENCE_ATTR,
    continuation_verdict,
    validation_noise,
)

logger = logging.getLogger(__name__)

HEARTBEAT_ATTR = "heartbeat"
WORKER_ATTR = "worker"  # host:pid of the tuner that asked the trial (who to blame for a stale one)
RETRY_OF_ATTR = "retry_of"
_CHOICE_TYPES = (type(None), bool, int, float, str)


# --- storage -----------------------------------------------------------------------------------
def make_storage(
    storage: str, *, sleep: Callable[[float], None] = time.sleep, attempts: int = 3
) -> optuna.storages.BaseStorage:
    """``journal:PATH`` -> JournalFileBackend; ``scheme://...`` -> RDBStorage; ``memory`` ->
    InMemoryStorage (one process, nothing kept: tests and benchmarks).

    Workers started together on an empty database race to create Optuna's tables (PostgreSQL:
    "duplicate key ... pg_type_typname_nsp_index"); the loser retries and finds them there.
    """
    if storage == "memory":
        return optuna.storages.InMemoryStorage()
    if storage.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = storage.removeprefix("journal:")
        if not path:
            raise ConfigError("storage 'journal:': expected journal:PATH")
        return JournalStorage(JournalFileBackend(path))
    if "://" not in storage:
        raise ConfigError(
            f"storage {storage!r}: expected an RDB URL (sqlite:///..., postgresql://...) or journal:PATH"
        )
    kwargs: dict[str, Any] = {}
    if not storage.startswith("sqlite"):
        kwargs = {"pool_pre_ping": True}  # a worker survives a restarted database server
    for attempt in range(1, attempts + 1):
        try:
            return optuna.storages.RDBStorage(storage, engine_kwargs=kwargs)
        except ImportError as e:  # no driver for the URL's scheme: retrying will not help
            raise TunerError(f"optuna storage {_redact(storage)}: {e}") from None
        except Exception as e:  # sqlalchemy raises many types, all meaning "cannot use this URL"
            if attempt == attempts:
                raise TunerError(f"optuna storage {_redact(storage)}: {str(e).splitlines()[0]}") from None
            logger.info(
                "optuna storage %s: attempt %d failed (%s), retrying",
                _redact(storage),
                attempt,
                str(e).splitlines()[0],
            )
            sleep(0.5 * attempt)
    raise AssertionError("unreachable")


def _redact(url: str) -> str:
    head, at, tail = url.rpartition("@")
    if not at or "://" not in head:
        return url
    scheme, _, _ = head.partition("://")
    return f"{scheme}://***@{tail}"


def validate_space(space: dict[str, ParamSpec]) -> None:
    """What Optuna would refuse later, refused now with the key named."""
    for name, spec in space.items():
        if spec.type == "choice":
            bad = [c for c in spec.choices or [] if not isinstance(c, _CHOICE_TYPES)]
            if bad:
                raise ConfigError(f"search_space.{name}: choice {bad[0]!r} is not None/bool/int/float/str")
        elif spec.type == "int" and (spec.low != int(spec.low or 0) or spec.high != int(spec.high or 0)):
            raise ConfigError(f"search_space.{name}: int needs whole low/high, got {spec.low}..{spec.high}")
        elif spec.type == "loguniform" and spec.step is not None:
            raise ConfigError(f"search_space.{name}: loguniform takes no step (got {spec.step})")


def suggest(trial: Trial, name: str, spec: ParamSpec) -> Any:
    """One param from a ParamSpec (``choice`` may include None: Optuna categoricals allow it)."""
    if spec.type == "loguniform":
        return trial.suggest_float(name, float(spec.low), float(spec.high), log=True)  # type: ignore[arg-type]
    if spec.type == "uniform":
        return trial.suggest_float(name, float(spec.low), float(spec.high), step=spec.step)  # type: ignore[arg-type]
    if spec.type == "int":
        return trial.suggest_int(name, int(spec.low), int(spec.high), step=int(spec.step or 1))  # type: ignore[arg-type]
    return trial.suggest_categorical(name, list(spec.choices or []))


# --- the engine --------------------------------------------------------------------------------
class OptimizationEngine:
    """One Optuna study driven by ask-and-tell; several processes may share it (RDB/journal)."""

    def __init__(
        self,
        cfg: OptimizationConfig,
        search_space: dict[str, ParamSpec],
        *,
        storage: str,
        study_name: str,
        direction: str = "minimize",
        n_brackets: int | None = None,
        n_trials: int | None = None,
        clock: Callable[[], float] = time.time,
        worker_id: str | None = None,
    ) -> None:
        if direction not in ("minimize", "maximize"):
            raise ConfigError(f"direction {direction!r}: expected minimize or maximize")
        if not search_space:
            raise ConfigError("search_space is empty: nothing to tune")
        validate_space(search_space)
        if worker_id is not None and cfg.seed is not None:
            # workers sharing a study with one seed would sample the same start-up points
            cfg = cfg.model_copy(update={"seed": (cfg.seed + zlib.crc32(worker_id.encode())) % 2**31})
        self.cfg = cfg
        self.search_space = dict(search_space)
        self.direction = direction
        self._clock = clock
        sampler_name = _enum_value(cfg.sampler)
        pruner_name = "hyperband" if sampler_name == "bohb" else _enum_value(cfg.pruner)
        if sampler_name == "bohb" and _enum_value(cfg.pruner) != "hyperband":
            logger.warning(
                "sampler bohb uses the hyperband pruner; optimization.pruner=%s ignored",
                _enum_value(cfg.pruner),
            )
        hb = cfg.hyperband
        self.n_brackets = n_brackets or default_n_brackets(
            n_trials, cfg.tpe.n_startup_trials, hb.min_resource, hb.max_resource, hb.reduction_factor
        )
        self.sampler_name, self.pruner_name = sampler_name, pruner_name
        sampler = SAMPLERS[sampler_name](cfg, self.search_space)
        pruner = PRUNERS[pruner_name](cfg, self.n_brackets)
        self.study = self._open_study(storage, study_name, sampler, pruner, explicit=n_brackets is not None)
        self._live: dict[int, Trial] = {}
        self._last_step: dict[int, int] = {}
        self._prune_reasons: dict[int, str] = {}  # trial -> why the warm-line rule pruned it
        brackets = f" ({self.n_brackets} brackets)" if pruner_name == "hyperband" else ""
        logger.info("study %s: sampler %s, pruner %s%s, %d trials so far", study_name, sampler_name,
                    pruner_name, brackets, len(self.study.get_trials(deepcopy=False)))

    def _open_study(
        self, storage: str, name: str, sampler: BaseSampler, pruner: BasePruner, explicit: bool
    ) -> optuna.Study:
        study = optuna.create_study(
            storage=make_storage(storage),
            study_name=name,
            sampler=sampler,
            pruner=pruner,
            direction="maximize" if self.direction == "maximize" else "minimize",
            load_if_exists=True,
        )
        stored = study.direction.name.lower()
        if stored != self.direction:
            raise TunerError(f"study {name}: stored direction is {stored}, not {self.direction}")
        setup = {"sampler": self.sampler_name, "pruner": self.pruner_name, "n_brackets": self.n_brackets}
        previous = study.user_attrs.get("engine")
        kept = (previous or {}).get("n_brackets")
        if self.pruner_name == "hyperband" and not explicit and kept and kept != self.n_brackets:
            # A different budget would derive another count and move old trials to other brackets.
            logger.info("study %s: keeping its %d hyperband brackets", name, kept)
            self.n_brackets = setup["n_brackets"] = int(kept)
            study.pruner = PRUNERS["hyperband"](self.cfg, self.n_brackets)
        if previous is None:
            study.set_user_attr("engine", setup)
        elif previous != setup:
            logger.warning("study %s was created with %s, resumed with %s", name, previous, setup)
        return study

    # --- trials ---------------------------------------------------------------------------------
    def ask(self) -> Trial:
        """A new (or re-queued WAITING) trial with every param of the search space sampled."""
        trial = self.study.ask()
        for name, spec in self.search_space.items():
            suggest(trial, name, spec)
        self._live[trial.number] = trial
        trial.set_user_attr(WORKER_ATTR, f"{socket.gethostname()}:{os.getpid()}")
        self.heartbeat(trial)
        return trial

    def enqueue_baseline(self, params: dict[str, Any]) -> bool:
        """Make ``params`` the first trial of a study that has none (search/baseline.py)."""
        if not params or self.study.get_trials(deepcopy=False):
            return False
        self.study.enqueue_trial(params, user_attrs={BASELINE_ATTR: True}, skip_if_exists=True)
        return True

    def set_reference(self, trial: Trial | int, value: float) -> None:
        """``trial`` continues a line whose checkpoint scored ``value``: judge it against that
        (search/warm_line.py) instead of by the pruner, when ``optimization.warm_prune_sigmas`` is set."""
        self._trial(trial).set_user_attr(REFERENCE_ATTR, float(value))

    def report(self, trial: Trial | int, value: float, step: int) -> bool:
        """Report ``value`` at ``step`` and return whether the pruner says stop.

        A step not above the last one reported to this trial is refused (warning, nothing
        stored, the verdict on the values already there is returned): Optuna would silently keep
        the first value. NaN is reported as the worst value (+inf when minimising). A warm-started
        trial (``set_reference``) is judged against its line; ``prune_reason`` says why.
        """
        t = self._trial(trial)
        last = self.last_step(t.number)
        if last is not None and step <= last:
            logger.warning("trial %d: step %d refused, last reported step is %d (steps must increase)", t.number, step, last)
            return bool(t.should_prune())
        value = float(value)
        if math.isnan(value):
            logger.warning("trial %d step %d: objective is NaN, reported as the worst value", t.number, step)
            value = math.inf if self.direction == "minimize" else -math.inf
        t.report(value, step)
        self._last_step[t.number] = int(step)
        if t.user_attrs.get(CARRY_ON_ATTR):  # the line carried on as one run: only the in-trial rules judge it
            return False
        reference = t.user_attrs.get(REFERENCE_ATTR) if self.cfg.warm_prune_sigmas is not None else None
        return bool(t.should_prune()) if reference is None else self._judge_continuation(t, float(reference), int(step))

    def _judge_continuation(self, t: Trial, reference: float, step: int) -> bool:
        trials = self.study.get_trials(deepcopy=False)
        noise = validation_noise(trials)
        if noise is None:  # too few validations to know the noise yet: the pruner judges
            return bool(t.should_prune())
        me = next(f for f in trials if f.number == t.number)
        values = [v for _, v in sorted(me.intermediate_values.items())]
        why = continuation_verdict(
            values, step, reference, noise, sigmas=float(self.cfg.warm_prune_sigmas or 0),
            min_step=self.cfg.hyperband.min_resource, maximize=self.direction == "maximize",
            horizon=self.cfg.hyperband.max_resource if self.pruner_name == "hyperband" else None,
        )
        if why:
            self._prune_reasons[t.number] = why
        return why is not None

    def prune_reason(self, trial: Trial | int) -> str | None:
        """Why the warm-line rule pruned ``trial`` (None: the pruner did, or nothing did)."""
        return self._prune_reasons.get(trial if isinstance(trial, int) else trial.number)

    def last_step(self, trial: Trial | int) -> int | None:
        number = trial if isinstance(trial, int) else trial.number
        if number not in self._last_step:
            steps = self._frozen(number).intermediate_values
            if not steps:
                return None
            self._last_step[number] = max(steps)
        return self._last_step[number]

    def tell(self, trial: Trial | int, value: float | None, state: TrialState) -> None:
        """Finish a trial. COMPLETE needs a non-NaN value (else the trial is marked FAIL);
        PRUNED takes the last reported value; FAIL ignores ``value``."""
        number = trial if isinstance(trial, int) else trial.number
        if state == TrialState.COMPLETE and (value is None or math.isnan(float(value))):
            logger.warning("trial %d: no valid objective (%s), marked FAIL", number, value)
            state, value = TrialState.FAIL, None
        if state != TrialState.COMPLETE:
            value = None
        if not self._finish(number, value, state):
            raise TunerError(
                f"trial {number}: already finished "
                f"({self._frozen(number).state.name}), cannot tell {state.name}"
            )
        self._live.pop(number, None)
        self._last_step.pop(number, None)

    def frozen(self, number: int) -> FrozenTrial:
        """Trial ``number`` as stored now (state, params, user attrs, intermediate values)."""
        return self._frozen(number)

    def best(self) -> FrozenTrial | None:
        try:
            return self.study.best_trial
        except ValueError:  # no complete trial yet
            return None

    # --- own heartbeat (Optuna's works only inside study.optimize) -------------------------------
    def heartbeat(self, trial: Trial | int) -> None:
        """Stamp ``user_attrs['heartbeat'] = now`` on a running trial."""
        try:
            self._trial(trial).set_user_attr(HEARTBEAT_ATTR, self._clock())
        except UpdateFinishedTrialError:
            number = trial if isinstance(trial, int) else trial.number
            raise TunerError(f"trial {number}: heartbeat on a finished trial") from None

    def stale_running_trials(self, older_than_s: float) -> list[FrozenTrial]:
        """RUNNING trials whose heartbeat (or start, if never stamped) is older than that."""
        now = self._clock()
        stale = []
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            beat = t.user_attrs.get(HEARTBEAT_ATTR)
            if beat is None and t.datetime_start is not None:
                beat = t.datetime_start.timestamp()
            if beat is None or now - float(beat) > older_than_s:
                stale.append(t)
        return stale

    def recover_stale(
        self,
        older_than_s: float,
        *,
        state: TrialState = TrialState.FAIL,
        requeue: bool = True,
        max_retry: int | None = 1,
    ) -> list[int]:
        """Finish stale trials (FAIL or PRUNED) and re-queue their params as WAITING trials.

        Returns the numbers this process finished. A trial another worker finished first is
        skipped (the storage refuses the second update), so it is re-queued only once.
        """
        if state not in (TrialState.FAIL, TrialState.PRUNED):
            raise ConfigError(f"recover_stale state {state.name}: expected FAIL or PRUNED")
        done = []
        for t in self.stale_running_trials(older_than_s):
            if not self._finish(t.number, None, state):
                continue  # another worker got there first
            done.append(t.number)
            history = [*t.user_attrs.get("retry_history", []), t.number]
            logger.warning(
                "trial %d: no heartbeat for > %.0f s, marked %s", t.number, older_than_s, state.name
            )
            if requeue and (max_retry is None or len(history) <= max_retry):
                self.study.enqueue_trial(
                    t.params,
                    user_attrs={RETRY_OF_ATTR: history[0], "retry_history": history},
                    skip_if_exists=False,
                )
        return done

    # --- helpers ----------------------------------------------------------------------------------
    def _finish(self, number: int, value: float | None, state: TrialState) -> bool:
        """Tell; False if the trial is already finished (also when another process won the race:
        the storage locks the row and refuses the second update)."""
        if self._frozen(number).state.is_finished():
            return False
        try:
            self.study.tell(number, value, state=state)
        except UpdateFinishedTrialError:
            return False
        return True

    def _frozen(self, number: int) -> FrozenTrial:
        for t in self.study.get_trials(deepcopy=False):
            if t.number == number:
                return t
        raise TunerError(f"study {self.study.study_name}: no trial number {number}")

    def _trial(self, trial: Trial | int) -> Trial:
        if isinstance(trial, Trial):
            return trial
        if trial not in self._live:
            # A trial asked by an earlier tuner process (resume/adopt): rebuild its handle.
            self._live[trial] = Trial(self.study, self._frozen(trial)._trial_id)
        return self._live[trial]


def _enum_value(v: Any) -> str:
    return str(getattr(v, "value", v))
