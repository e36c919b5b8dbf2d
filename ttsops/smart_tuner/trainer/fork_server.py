"""A long-lived trainer parent: Python imported once, every generation a forked child.

A tuner restart used to pay a fresh interpreter each generation: torch, ttsops.train, ``torch._dynamo``
(Adam imports it) and MLflow's tracking store take ~5 of the ~10 CPU-seconds before the first step,
and a small study runs dozens of generations. The fork server imports those modules once; each
launch of a ``{python} -m MODULE ...`` or ``{python} SCRIPT.py ...`` command is then a ``fork`` of it
that becomes that command:

* its own session and process group (``setsid``): the tuner signals it exactly as a Popen trainer
  (SIGINT to the group, the contract's graceful stop), and the pid file finds it after a tuner crash;
* SIGINT raising KeyboardInterrupt and SIGTERM at its default action, both unblocked, as in a fresh
  interpreter; stdin ``/dev/null``, stdout and stderr appended to the generation's ``train.log``;
* the launch's working directory, environment (``os.environ`` replaced), ``sys.argv`` and
  ``sys.path[0]``; numpy's and torch's global generators reseeded as a new process would have them;
* the module run as ``__main__`` (``runpy``); its ``sys.exit`` code, an uncaught exception (traceback,
  exit 1) or an uncaught KeyboardInterrupt (killed by SIGINT) end the child as they end a process,
  through the interpreter's shutdown steps (thread joins, atexit, buffered output flushed) but not
  its finalisation (tearing down the preloaded modules cost ~2.5 CPU-s per train.py child): fork_child.py.

The server reaps its children and reports each exit status (negative: killed by that signal, as
``Popen.returncode``). It reads requests from stdin and stops at EOF, so it never outlives the tuner;
the children it started keep running as a Popen trainer does when the tuner dies (the pid files find
them). It is never handed a launch whose import-time environment differs from its own: libraries read
variables such as ``OMP_NUM_THREADS`` when they load, so the wrapper starts a new server when anything
but the per-launch variables (``PER_LAUNCH_ENV``) changes.

Nothing runs threads or torch operations before the fork except what importing the preloaded modules
starts (BLAS thread pools that handle ``fork`` themselves, as every fork-started DataLoader worker
relies on). Protocol: one JSON object per line; requests ``{"id", "argv", "env", "cwd", "log"}``,
replies ``{"ready"}`` (or ``{"error"}``) once, ``{"started": id, "pid"}`` per request and
``{"exited": pid, "code"}`` per child.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ttsops.smart_tuner.trainer.fork_child import run_child

SERVER_MODULE = "ttsops.smart_tuner.trainer.fork_server"
# what a train.py launch imports before its first step (~4.2 s on the 2-core box: ttsops.train.train 1.5,
# torch._dynamo 1.0, MLflow's store 1.7), and on its first validation (~1.3 s: TensorBoard's writer,
# pyplot, pystoi, pesq, librosa's filters, scipy)
TRAIN_PRELOAD = (
    "ttsops.train.train", "torch._dynamo", "mlflow.store.tracking.sqlalchemy_store", "torch.utils.tensorboard",
    "matplotlib.pyplot", "pystoi", "pesq", "librosa.filters", "scipy.signal", "scipy.stats", "rich.progress",
)
# the environment variables that differ from one launch to the next (command.py sets them); any other
# difference means a new server, since modules may have read them on import
PER_LAUNCH_ENV = frozenset({"MLFLOW_RUN_ID", "TTSOPS_GENERATION", "TTSOPS_HPARAMS"})
POLL_S = 0.05


def fork_target(argv: list[str], python: str) -> tuple[str, str] | None:
    """``("module", name)`` for ``python -m name ...``, ``("path", script)`` for ``python script ...``,
    None for any other command (another program, interpreter options): those are not forked."""
    if len(argv) < 2 or argv[0] != python:
        return None
    if argv[1] == "-m":
        return ("module", argv[2]) if len(argv) > 2 and argv[2] and not argv[2].startswith("-") else None
    return None if argv[1].startswith("-") else ("path", argv[1])


# --- the server ------------------------------------------------------------------------------------
def _send(fd: int, msg: dict[str, Any]) -> None:
    data = (json.dumps(msg) + "\n").encode()
    while data:
        data = data[os.write(fd, data):]


def proc_start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux ``/proc``), or None if gone.

    A zombie counts as gone: it has exited and only waits to be reaped.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return None
    fields_ = raw[raw.rfind(")") + 2 :].split()  # the command name may contain spaces
    if fields_[0] in ("Z", "X"):
        return None
    return fields_[19]


def _start_child(req: dict[str, Any], proto: tuple[int, int]) -> tuple[int, str | None]:
    """Fork the request's child; returns once it has its own session and signal handlers, with its pid
    file written (so a reply lost on the way still leaves the trainer findable)."""
    r, w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        run_child(req, proto, w)  # never returns: the child exits as its command does
    os.close(w)
    os.read(r, 1)  # b"1", or b"" if it died first
    os.close(r)
    ticks = proc_start_ticks(pid)  # not reaped yet: only this loop reaps
    if req.get("pid_file"):
        path = req["pid_file"]
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump({**req.get("pid_info", {}), "pid": pid, "start_ticks": ticks}, f)
        os.replace(tmp, path)
    return pid, ticks


def _reap(proto_out: int, children: set[int]) -> None:
    for pid in list(children):
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere: its status is lost
            children.discard(pid)
            _send(proto_out, {"exited": pid, "code": -1})
            continue
        if done:
            children.discard(pid)
            _send(proto_out, {"exited": pid, "code": os.waitstatus_to_exitcode(status)})


def _cuda_driver_loaded() -> bool:
    """Whether the CUDA driver library is mapped (``torch.cuda.is_available()`` loads it without
    ``is_initialized()`` saying so); a fork cannot carry it."""
    try:
        with open("/proc/self/maps") as f:
            return "libcuda.so" in f.read()
    except OSError:
        return False


def serve(preload: list[str]) -> None:
    """The server's loop (``python -m ttsops.smart_tuner.trainer.fork_server MODULE...``)."""
    import importlib

    proto_in, proto_out = os.dup(0), os.dup(1)  # the protocol's own fds; 0 and 1 go elsewhere so a
    null = os.open(os.devnull, os.O_RDONLY)  # stray print from an import cannot corrupt it
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the tuner stops it by closing stdin
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # inherited SIG_IGN would reap children unseen
    t0 = time.perf_counter()
    try:
        for name in preload:
            importlib.import_module(name)
    except BaseException as e:  # noqa: BLE001 - any import failure is reported, the tuner falls back
        _send(proto_out, {"error": f"importing {name}: {type(e).__name__}: {e}"})
        raise SystemExit(1) from None
    torch = sys.modules.get("torch")
    if (torch is not None and torch.cuda.is_initialized()) or _cuda_driver_loaded():
        _send(proto_out, {"error": "the preloaded modules started CUDA: a forked child could not use it"})
        raise SystemExit(1)
    if threading.active_count() > 1:
        names = ", ".join(t.name for t in threading.enumerate() if t is not threading.main_thread())
        _send(proto_out, {"error": f"the preloaded modules started Python threads ({names}): forking is unsafe"})
        raise SystemExit(1)
    _send(proto_out, {"ready": True, "pid": os.getpid(), "import_s": round(time.perf_counter() - t0, 3)})
    children: set[int] = set()
    buf = b""
    while True:
        ready, _, _ = select.select([proto_in], [], [], POLL_S)
        _reap(proto_out, children)
        if not ready:
            continue
        chunk = os.read(proto_in, 1 << 16)
        if not chunk:
            return  # the tuner is gone or closed us; children run on in their own sessions
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            req = json.loads(line)
            pid, ticks = _start_child(req, (proto_in, proto_out))
            children.add(pid)
            _send(proto_out, {"started": req["id"], "pid": pid, "start_ticks": ticks})


# --- the tuner's side ------------------------------------------------------------------------------
class ForkServerError(Exception):
    """The fork server could not start or stopped answering (the wrapper falls back to Popen)."""


class ForkedTrainer:
    """A trainer the fork server started: ``pid`` and ``poll()`` as a ``Popen``. If the server is
    gone before the child, the exit status is lost: ``poll()`` says -1 once ``running()`` is False."""

    def __init__(self, pid: int, server: ForkServer, running: Callable[[], bool], start_ticks: str | None = None) -> None:
        self.pid, self._server, self._running, self.start_ticks = pid, server, running, start_ticks

    def poll(self) -> int | None:
        code = self._server.exit_code(self.pid)
        if code is not None:
            return code
        if self._server.alive:
            return None
        code = self._server.exit_code(self.pid)  # it may have reported just before it went
        if code is not None:
            return code
        return None if self._running() else -1


class ForkServer:
    """The tuner's handle on one fork server process (started by ``start``, ended by ``close``)."""

    def __init__(self, python: str, preload: list[str], env: dict[str, str], log_path: Path,
                 start_timeout_s: float = 300.0) -> None:
        self.python, self.preload, self.env, self.log_path = python, list(preload), dict(env), log_path
        self.start_timeout_s = start_timeout_s
        self.import_s: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._cond = threading.Condition()
        self._started: dict[int, tuple[int, str | None]] = {}  # request id -> pid, start ticks
        self._exits: dict[int, int] = {}  # pid -> exit code
        self._error: str | None = None
        self._ready = False
        self._eof = False
        self._closed = False
        self._reader: threading.Thread | None = None
        self._next_id = 0
        self._lock = threading.Lock()  # one request at a time

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        """Started and not yet at the end of its output (so no exit it reported can still be unread)."""
        with self._cond:
            return self._proc is not None and not self._eof

    def compatible(self, env: dict[str, str]) -> bool:
        """Whether a launch with ``env`` may be forked from this server (same import-time environment)."""
        return _import_env(env) == _import_env(self.env)

    def exit_code(self, pid: int) -> int | None:
        with self._cond:
            return self._exits.get(pid)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            try:
                self._proc = subprocess.Popen(
                    [self.python, "-m", SERVER_MODULE, *self.preload],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=self.env,
                    start_new_session=True, cwd=os.getcwd(),
                )
            except OSError as e:
                raise ForkServerError(f"cannot start {self.python!r}: {e.strerror or e}") from None
        self._reader = threading.Thread(target=self._read, name="fork-server-reader", daemon=True)
        self._reader.start()
        with self._cond:
            self._cond.wait_for(lambda: self._ready or self._error or self._eof, self.start_timeout_s)
            if self._ready:
                return
            why = self._error or ("it exited" if self._eof else f"no answer in {self.start_timeout_s:.0f} s")
        self.close()
        raise ForkServerError(f"{why} (log: {self.log_path})")

    def spawn(self, kind: str, target: str, args: list[str], env: dict[str, str], cwd: str, log: Path,
              pid_file: Path, pid_info: dict[str, Any], timeout_s: float = 30.0) -> tuple[int, str | None]:
        """Fork one child running ``target`` with ``args``; its pid and start ticks. The server writes
        ``pid_file`` (``pid_info`` plus pid and start ticks) before it answers."""
        proc = self._proc
        if proc is None or proc.stdin is None or self._closed or not self.alive:
            raise ForkServerError("the fork server is not running")
        with self._lock:
            rid = self._next_id
            self._next_id += 1
            req = {"id": rid, "kind": kind, "target": target, "argv": args, "env": env, "cwd": cwd,
                   "log": str(log), "pid_file": str(pid_file), "pid_info": pid_info}
            try:
                proc.stdin.write((json.dumps(req) + "\n").encode())
                proc.stdin.flush()
            except (OSError, ValueError) as e:
                raise ForkServerError(f"the fork server stopped reading: {e}") from None
            with self._cond:
                self._cond.wait_for(lambda: rid in self._started or self._eof, timeout_s)
                if rid not in self._started:
                    raise ForkServerError("the fork server " + ("exited" if self._eof else "did not answer"))
                return self._started.pop(rid)

    def close(self, timeout_s: float = 10.0) -> None:
        """Close its stdin (it exits; its children run on), reap it and read what it still reported."""
        proc = self._proc
        if proc is None or self._closed:
            return
        self._closed = True
        try:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(timeout_s)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
        if self._reader is not None:
            self._reader.join(timeout_s)

    def _read(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        for raw in proc.stdout:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            with self._cond:
                if "ready" in msg:
                    self._ready, self.import_s = True, msg.get("import_s")
                elif "error" in msg:
                    self._error = str(msg["error"])
                elif "started" in msg:
                    pid = int(msg["pid"])
                    self._exits.pop(pid, None)  # a recycled pid: an earlier child's exit is not this one's
                    self._started[int(msg["started"])] = (pid, msg.get("start_ticks"))
                elif "exited" in msg:
                    self._exits[int(msg["exited"])] = int(msg["code"])
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()


def _import_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in PER_LAUNCH_ENV}


if __name__ == "__main__":
    serve(sys.argv[1:])
