"""TrainerWrapper: starts, watches and stops the trainer process of one generation.

The trainer is whatever ``AdapterConfig.command`` names (our ``python -m ttsops.train`` by
default, any other script through the adapter). Each launch:

* runs in its own session and process group (``start_new_session=True``): a Ctrl-C in the tuner's
  terminal never reaches it, and a stop signal reaches its data-loader workers too;
* starts with SIGINT and SIGTERM at their default actions and unblocked, whatever the tuner
  inherited: a tuner started in the background of a shell script (``ttsops tune ... &``) has
  SIGINT ignored, and an ignored signal stays ignored across ``exec``, so a trainer that relies on
  Python's KeyboardInterrupt could not save on the tuner's stop (``default_stop_signals``);
* appends stdout and stderr to ``<gen_dir>/train.log`` (one header line per attempt);
* writes ``<gen_dir>/trainer.pid`` (JSON: pid, process start time, command), so a tuner restarted
  after its own ``kill -9`` can find the orphan and stop it. The start time guards against a
  recycled pid;
* is a fork of a long-lived fork server (fork_server.py) when the command is ``{python} -m MODULE``
  or ``{python} SCRIPT`` and ``adapter.preload`` names modules to import once (default: train.py's
  when the command is ``{python} -m ttsops.train``): the same session, signals, log, pid file and
  exit codes as a fresh process, without paying the interpreter and imports each generation. If the
  server cannot start, launches fall back to a fresh process (one warning).

Stopping escalates: SIGINT to the group (the contract: finish the step, write a checkpoint,
exit 0) -> ``stop_grace_s`` -> SIGTERM (the second signal: exit at once) -> ``kill_grace_s`` ->
SIGKILL. Every wait is ``threading.Event.wait(poll_s)`` on an injectable event and clock, so tests
never sleep and the tuner can be interrupted while it waits.

How one launch's command line and environment are built is command.py.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ttsops.config import AdapterConfig
from ttsops.errors import TrainerError
from ttsops.infra.atomic import atomic_write_text
from ttsops.smart_tuner.trainer.adapter import CommandAdapter, TrainerAdapter
from ttsops.smart_tuner.trainer.command import HPARAMS_ENV, LaunchSpec, build_command
from ttsops.smart_tuner.trainer.fork_server import (
    TRAIN_PRELOAD,
    ForkedTrainer,
    ForkServer,
    ForkServerError,
    fork_target,
    proc_start_ticks,
)

logger = logging.getLogger(__name__)

PID_FILE = "trainer.pid"
LOG_FILE = "train.log"
FORK_SERVER_LOG = "fork_server.log"  # beside the generation directories

Clock = Callable[[], float]
Signaller = Callable[[int, int], None]  # (pgid, signal) -> None; os.killpg by default


# --- processes ------------------------------------------------------------------------------------
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def default_stop_signals() -> None:
    """In the forked child, before ``exec``: SIGINT and SIGTERM back to their default actions and
    unblocked. ``exec`` resets caught signals but keeps ignored ones and the signal mask, so without
    this a trainer inherits whatever the tuner was started with (SIG_IGN for SIGINT under a
    shell's ``&``). It runs between fork and exec, so it does nothing else (no imports, no logging)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def pid_alive(pid: int, start_ticks: str | None) -> bool:
    """True while ``pid`` runs and is the same process (same start time) as recorded."""
    ticks = proc_start_ticks(pid)
    if ticks is None:
        return False
    return start_ticks is None or ticks == start_ticks


def preload_modules(adapter: AdapterConfig) -> list[str]:
    """What the fork server imports: ``adapter.preload``, or for null train.py's modules when the
    command runs ``{python} -m ttsops.train`` (another trainer is forked only when the config says
    what to preload); empty: every launch is a fresh process."""
    if adapter.preload is not None:
        return list(adapter.preload)
    return list(TRAIN_PRELOAD) if adapter.command[:3] == ["{python}", "-m", "ttsops.train"] else []


class Child(Protocol):
    """What the wrapper needs of a started trainer: a ``Popen`` or a ``ForkedTrainer``."""

    pid: int

    def poll(self) -> int | None: ...


@dataclass
class TrainerProcess:
    """One running (or finished) trainer; ``popen`` is None for an orphan found by pid file."""

    pid: int
    start_ticks: str | None
    gen_dir: Path
    started_at: float
    popen: Child | None = None
    argv: list[str] = field(default_factory=list)
    stop_requested: bool = False

    def returncode(self) -> int | None:
        """Exit code once it has exited (None while running; -1 for an orphan that is gone)."""
        if self.popen is not None:
            return self.popen.poll()
        return None if pid_alive(self.pid, self.start_ticks) else -1

    @property
    def running(self) -> bool:
        return self.returncode() is None


@dataclass(frozen=True)
class StopResult:
    returncode: int | None
    escalation: str  # "exited" (already gone), "SIGINT", "SIGTERM", "SIGKILL"
    seconds: float


class TrainerWrapper:
    """Launches and stops trainer processes as the adapter says."""

    def __init__(
        self,
        adapter: AdapterConfig,
        *,
        python: str = sys.executable,
        clock: Clock = time.monotonic,
        stop_event: threading.Event | None = None,
        poll_s: float = 0.05,
        signaller: Signaller = os.killpg,
        trainer: TrainerAdapter | None = None,
    ) -> None:
        self.adapter = adapter
        self.python = python
        self.trainer: TrainerAdapter = trainer or CommandAdapter(adapter)
        self._clock = clock
        self._event = stop_event or threading.Event()  # only ever waited on, never set here
        self.poll_s = poll_s
        self._signal = signaller
        self.preload = preload_modules(adapter)
        self._server: ForkServer | None = None

    # --- start ------------------------------------------------------------------------------------
    def launch(self, spec: LaunchSpec) -> TrainerProcess:
        argv, extra_env = build_command(self.adapter, spec, self.python, self.trainer.hparams_string)
        spec.gen_dir.mkdir(parents=True, exist_ok=True)
        spec.log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **extra_env}
        if self.adapter.hparams_style != "env_json":
            env.pop(HPARAMS_ENV, None)
        log_path = spec.gen_dir / LOG_FILE
        forked = self._fork(argv, env, spec, log_path)
        child: Child
        if forked is not None:
            child = forked
        else:
            with open(log_path, "ab") as log:
                log.write(
                    f"\n=== ttsops tuner: generation {spec.generation} attempt {spec.attempt}: "
                    f"{shlex.join(argv)}\n".encode()
                )
                log.flush()
                try:
                    child = subprocess.Popen(
                        argv,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        env=env,
                        start_new_session=True,
                        cwd=os.getcwd(),
                        preexec_fn=default_stop_signals,
                    )
                except OSError as e:
                    raise TrainerError(f"cannot start trainer {argv[0]!r}: {e.strerror or e}") from None
        ticks = getattr(child, "start_ticks", None) or proc_start_ticks(child.pid)
        proc = TrainerProcess(child.pid, ticks, spec.gen_dir, self._clock(), child, argv)
        write_pid_file(proc, spec)
        logger.info(
            "generation %d: trainer started (pid %d, attempt %d, %s%s), log %s",
            spec.generation,
            proc.pid,
            spec.attempt,
            spec.checkpoint.mode,
            ", forked" if forked is not None else "",
            log_path,
        )
        return proc

    def _fork(self, argv: list[str], env: dict[str, str], spec: LaunchSpec, log_path: Path) -> Child | None:
        """The launch as a child of the fork server, or None: not a Python command, no preload, or
        the server failed (then never again for this wrapper: one warning, fresh processes)."""
        target = fork_target(argv, self.python)
        if not self.preload or target is None:
            return None
        try:
            server = self._fork_server(env, spec.gen_dir.parent / FORK_SERVER_LOG)
            with open(log_path, "ab") as log:
                log.write(
                    f"\n=== ttsops tuner: generation {spec.generation} attempt {spec.attempt}: "
                    f"{shlex.join(argv)} (forked from the fork server, pid {server.pid})\n".encode()
                )
            (spec.gen_dir / PID_FILE).unlink(missing_ok=True)  # the server writes this launch's
            pid, ticks = server.spawn(target[0], target[1], argv[3 if target[0] == "module" else 2:], env,
                                      os.getcwd(), log_path, spec.gen_dir / PID_FILE, pid_info(spec, argv))
        except ForkServerError as e:
            logger.warning("fork server (preload %s): %s; every launch starts a fresh interpreter",
                           ", ".join(self.preload), e)
            self.preload = []
            self.close()
            orphan = self.find_orphan(spec.gen_dir)  # forked before the answer was lost: keep watching it
            return _Adopted(orphan.pid, orphan.start_ticks) if orphan is not None else None
        return ForkedTrainer(pid, server, lambda: pid_alive(pid, ticks), ticks)

    def _fork_server(self, env: dict[str, str], log_path: Path) -> ForkServer:
        """The running server if it has this launch's import-time environment, else a new one."""
        if self._server is not None and self._server.alive and self._server.compatible(env):
            return self._server
        if self._server is not None:
            logger.info("fork server: the environment changed (or it exited): starting a new one")
            self.close()
        server = ForkServer(self.python, self.preload, env, log_path)
        server.start()
        logger.info("fork server pid %s ready: imported %s in %.1f s", server.pid, ", ".join(self.preload),
                    server.import_s or 0.0)
        self._server = server
        return server

    def close(self) -> None:
        """Stop the fork server (its children, running trainers, are not touched)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()

    # --- stop -------------------------------------------------------------------------------------
    def stop(self, proc: TrainerProcess) -> StopResult:
        """SIGINT -> stop_grace_s -> SIGTERM -> kill_grace_s -> SIGKILL; returns how it ended."""
        proc.stop_requested = True
        t0 = self._clock()
        if not proc.running:
            return StopResult(proc.returncode(), "exited", 0.0)
        steps = (
            (signal.SIGINT, self.adapter.stop_grace_s),
            (signal.SIGTERM, self.adapter.kill_grace_s),
            (signal.SIGKILL, self.adapter.kill_grace_s),
        )
        for sig, grace in steps:
            self._send(proc, sig)
            if self.wait_exit(proc, grace):
                code = proc.returncode()
                logger.info(
                    "trainer pid %d ended after %s (exit %s, %.1f s)",
                    proc.pid,
                    sig.name,
                    code,
                    self._clock() - t0,
                )
                return StopResult(code, sig.name, self._clock() - t0)
            logger.warning("trainer pid %d still running %.0f s after %s", proc.pid, grace, sig.name)
        raise TrainerError(f"trainer pid {proc.pid} survived SIGKILL (gen dir {proc.gen_dir})")

    def wait_exit(self, proc: TrainerProcess, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the process to exit; True if it did."""
        deadline = self._clock() + timeout_s
        while proc.running:
            if self._clock() >= deadline:
                return False
            self._event.wait(self.poll_s)
        return True

    def _send(self, proc: TrainerProcess, sig: signal.Signals) -> None:
        if proc.popen is None and not pid_alive(proc.pid, proc.start_ticks):
            return  # an orphan whose pid may already belong to someone else
        try:
            self._signal(proc.pid, sig)  # pgid == pid: the trainer leads its own session
        except ProcessLookupError:
            pass
        except PermissionError as e:
            raise TrainerError(f"cannot signal trainer pid {proc.pid}: {e}") from None

    # --- after a tuner crash ----------------------------------------------------------------------
    def find_orphan(self, gen_dir: str | Path) -> TrainerProcess | None:
        """The trainer a dead tuner left running in ``gen_dir`` (None if none is alive)."""
        info = read_pid_file(Path(gen_dir))
        if info is None or info.get("host") != socket.gethostname():
            return None
        pid, ticks = int(info["pid"]), info.get("start_ticks")
        if not pid_alive(pid, ticks):
            return None
        return TrainerProcess(pid, ticks, Path(gen_dir), self._clock(), None, list(info.get("argv", [])))

    # --- what the trainer left -------------------------------------------------------------------
    def latest_checkpoint(self, gen_dir: str | Path) -> Path | None:
        """The newest checkpoint the trainer left in ``gen_dir`` (the TrainerAdapter says where)."""
        return self.trainer.latest_checkpoint(Path(gen_dir))

    def checkpoint_at(self, gen_dir: str | Path, step: int) -> Path | None:
        """The checkpoint the trainer wrote at global step ``step``, if it is still there and known."""
        return self.trainer.checkpoint_at(Path(gen_dir), step)

    def train_state(self, gen_dir: str | Path) -> dict[str, Any] | None:
        return self.trainer.train_state(Path(gen_dir))


def pid_info(spec: LaunchSpec, argv: list[str]) -> dict[str, Any]:
    """What the pid file says besides the pid and its start time."""
    return {"host": socket.gethostname(), "generation": spec.generation, "attempt": spec.attempt,
            "run_id": spec.run_id, "argv": argv}


def write_pid_file(proc: TrainerProcess, spec: LaunchSpec) -> None:
    info = {"pid": proc.pid, "start_ticks": proc.start_ticks, **pid_info(spec, proc.argv)}
    atomic_write_text(spec.gen_dir / PID_FILE, json.dumps(info))


class _Adopted:
    """A forked trainer whose server went away before it answered: watched by its pid, as an orphan."""

    def __init__(self, pid: int, start_ticks: str | None) -> None:
        self.pid, self._ticks = pid, start_ticks

    def poll(self) -> int | None:
        return None if pid_alive(self.pid, self._ticks) else -1


def last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return f"(no log at {path})"
    return f"{lines[-1]} (log: {path})" if lines else f"(empty log {path})"


def read_pid_file(gen_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((gen_dir / PID_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "pid" in data else None
