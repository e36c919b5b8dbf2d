"""Helpers for the service tests: a real uvicorn server in a thread, a test-only synthesizer (sine
audio whose length follows the text: the edge we fake), tiny real Tacotron2 checkpoints, and
headless Chromium driven over the DevTools protocol on a pipe (no port, no websocket, no download).
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from tests.helpers import TINY

SR = 16000
SECONDS_PER_CHAR = 0.02


class SineSynthesizer:
    """Test-only stand-in for a trained model: 20 ms of tone per character; ``delay_s`` of sleep
    per call so tests can see whether calls overlap."""

    def __init__(self, freq: float, delay_s: float = 0.0) -> None:
        self.freq, self.delay_s, self.sample_rate = freq, delay_s, SR
        self._lock = threading.Lock()
        self.running = self.max_running = self.calls = 0

    def synthesize(self, text: str) -> tuple[np.ndarray, int]:
        if not any(c.isalnum() for c in text):
            raise ValueError("no speakable characters")
        with self._lock:
            self.running += 1
            self.calls += 1
            self.max_running = max(self.max_running, self.running)
        try:
            time.sleep(self.delay_s)
            t = np.arange(int(len(text) * SECONDS_PER_CHAR * SR)) / SR
            return (0.3 * np.sin(2 * np.pi * self.freq * t)).astype(np.float32), SR
        finally:
            with self._lock:
                self.running -= 1


def write_sine_checkpoint(path: Path, freq: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"freq": freq}))
    return path


class SineLoader:
    """Loads ``write_sine_checkpoint`` files; remembers what it built."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.loaded: list[SineSynthesizer] = []

    def __call__(self, path: Path) -> SineSynthesizer:
        synth = SineSynthesizer(json.loads(Path(path).read_text())["freq"], self.delay_s)
        self.loaded.append(synth)
        return synth


@contextmanager
def running_server(app: Any) -> Iterator[str]:
    """uvicorn on a pre-bound 127.0.0.1 socket in a thread; yields the base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    errors: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as e:  # a failed lifespan start-up surfaces here; re-raised below
            errors.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive():
            sock.close()
            raise RuntimeError(f"uvicorn exited during start-up: {errors[0] if errors else '?'}")
        if time.monotonic() > deadline:
            raise TimeoutError("uvicorn did not start in 60 s")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


# --- tiny real Tacotron2 checkpoints ---------------------------------------------------------


def make_tiny_checkpoint(path: Path, seed: int = 0, **overrides: Any) -> Path:
    """An untrained tiny Tacotron2 (configs/tiny.yaml) saved like train.py saves one (an untrained
    decoder runs to ``max_decoder_steps``, so 40 steps keep a request well under a second)."""
    import torch

    from ttsops.model.tacotron2 import ModelConfig, Tacotron2
    from ttsops.train.checkpoint import save_checkpoint
    from ttsops.train.hparams import HParams

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    hp = HParams().replace(**{**TINY, **overrides})
    model = Tacotron2(ModelConfig.from_hparams(hp))
    state = {
        "model": model.state_dict(),
        "hparams": hp.to_dict(),
        "step": 0,
        "epoch": 0,
        "best_val_loss": None,
    }
    return save_checkpoint(path, state)


# --- headless Chromium over the DevTools pipe ------------------------------------------------
CHROMIUM = "/usr/bin/chromium"


# moves the pipe ends to fds 3 and 4 and execs Chromium (dash's 3<&N cannot name fds >= 10)
_EXEC_WITH_PIPES = (
    "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
    "os.execv(sys.argv[3], sys.argv[3:])"
)


def _high_fd(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class Chromium:
    """``--remote-debugging-pipe``: CDP messages are NUL-terminated JSON on fds 3 (in) and 4 (out),
    so no port, no websocket client and no download is needed."""

    def __init__(self, binary: str = CHROMIUM) -> None:
        self.profile = tempfile.mkdtemp(prefix="ttsops-chromium-")
        # the child's ends must not sit on fds 3/4 themselves, or moving them there clobbers one
        child_in, self._to_child = (_high_fd(fd) for fd in os.pipe())
        self._from_child, child_out = (_high_fd(fd) for fd in os.pipe())
        args = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--mute-audio",
            "--autoplay-policy=no-user-gesture-required",
            f"--user-data-dir={self.profile}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _EXEC_WITH_PIPES, str(child_in), str(child_out), *args],
            pass_fds=(child_in, child_out),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(child_in)
        os.close(child_out)
        self._next_id = 0
        self._replies: dict[int, dict[str, Any]] = {}
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buf = b""
        with os.fdopen(self._from_child, "rb", buffering=0) as f:
            while chunk := f.read(65536):
                buf += chunk
                while b"\0" in buf:
                    raw, buf = buf.split(b"\0", 1)
                    msg = json.loads(raw)
                    if "id" in msg:
                        with self._cond:
                            self._replies[msg["id"]] = msg
                            self._cond.notify_all()
                    else:
                        self.events.put(msg)

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str | None = None,
        timeout: float = 60,
    ) -> dict[str, Any]:
        self._next_id += 1
        mid = self._next_id
        msg: dict[str, Any] = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        with self._cond:
            if not self._cond.wait_for(lambda: mid in self._replies, timeout):
                raise TimeoutError(f"no reply to {method} in {timeout} s")
            reply = self._replies.pop(mid)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def open(self, url: str, timeout: float = 60) -> str:
        """A new tab showing ``url`` once its load event fired; returns the CDP session id."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.call("Page.enable", session=session)
        self.call("Page.navigate", {"url": url}, session=session)
        deadline = time.monotonic() + timeout
        while True:
            event = self.events.get(timeout=max(deadline - time.monotonic(), 0.01))
            if event.get("sessionId") == session and event["method"] == "Page.loadEventFired":
                return session

    def evaluate(self, session: str, expression: str, timeout: float = 60) -> Any:
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            session=session,
            timeout=timeout,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except (TimeoutError, RuntimeError, OSError):
            pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_child)
        shutil.rmtree(self.profile, ignore_errors=True)


def post_all_at_once(url: str, texts: list[str], timeout: float) -> list[Any]:
    """POST each text to ``url``/v1/tts from its own thread, all released together by a barrier;
    the responses in order (an exception object where a request failed)."""
    results: list[Any] = [None] * len(texts)
    barrier = threading.Barrier(len(texts))

    def client(i: int) -> None:
        try:
            barrier.wait()
            results[i] = httpx.post(f"{url}/v1/tts", json={"text": texts[i]}, timeout=timeout)
        except BaseException as e:  # the caller asserts on it
            results[i] = e

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=2 * timeout)
    return results
