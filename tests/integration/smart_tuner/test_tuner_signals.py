"""A tuner started with SIGINT ignored (``... &`` in a non-interactive shell ignores SIGINT, and an
ignored signal survives ``exec``): its trainer must still save on the tuner's stop. The trainer is
the foreign one relying on Python's KeyboardInterrupt (no handlers of its own), so an inherited
SIG_IGN would leave it deaf to SIGINT until the SIGTERM escalation kills it without a checkpoint."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from optuna.trial import TrialState

from tests.integration.smart_tuner.fixtures import tuner_testkit as kit
from ttsops.smart_tuner.trainer.generation import RunnerConfig
from ttsops.smart_tuner.trainer.trainer_wrapper import LOG_FILE, pid_alive, read_pid_file
from ttsops.smart_tuner.tuner import Tuner

REPO = Path(__file__).resolve().parents[3]


def _config(tmp_path: Path) -> tuple[Path, object]:
    data = kit.foreign_config(tmp_path, n_trials=2, epochs=50, adapter=kit.foreign_adapter_dict(epoch_seconds=1.0))
    data["adapter"]["stop_grace_s"] = 20.0
    return kit.write_config(tmp_path, data)


def _saved_on_keyboard_interrupt(gen: Path) -> None:
    log = (gen / LOG_FILE).read_text()
    assert "(KeyboardInterrupt)" in log, log[-2000:]
    saved = int(log.split("stopped at step ")[-1].split()[0])
    with np.load(max(gen.glob("ckpt-*.npz"))) as ck:  # the checkpoint it wrote on the way out
        assert int(ck["step"]) == saved


@pytest.mark.usefixtures("mlflow_uri")
def test_a_tuner_run_with_sigint_ignored_still_stops_its_trainer_with_a_checkpoint(tmp_path, monkeypatch, caplog):
    """The library path (``Tuner(cfg).run()`` in a process that ignores SIGINT, no CLI handler)."""
    _, cfg = _config(tmp_path)
    monkeypatch.setenv("FOREIGN_KEYBOARD_INTERRUPT", "1")
    caplog.set_level(logging.INFO, logger="ttsops.smart_tuner")
    stop = threading.Event()
    tuner = Tuner(cfg, runner_cfg=RunnerConfig(poll_s=0.1, heartbeat_s=1.0), stop_event=stop)
    gen = tmp_path / "runs" / "foreign" / "generations" / "gen_0000"
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        box: dict = {}
        th = threading.Thread(target=lambda: box.setdefault("s", tuner.run()), daemon=True)
        th.start()
        kit.wait_for(lambda: list(gen.glob("ckpt-*.npz")), 120, "the trainer's first epoch")
        stop.set()
        th.join(120)
    finally:
        signal.signal(signal.SIGINT, old)
    assert box["s"].status == "interrupted"
    _saved_on_keyboard_interrupt(gen)
    assert any("ended after SIGINT (exit 0" in r.getMessage() for r in caplog.records)


def test_tuner_started_with_sigint_ignored_still_lets_its_trainer_save_on_stop(tmp_path, mlflow_uri):
    """The CLI path: ``smart_tuner.py --config ... &`` in a shell script, stopped with ``kill``."""
    config, cfg = _config(tmp_path)
    pid_file = tmp_path / "tuner.pid"
    script = f'{sys.executable} {REPO / "smart_tuner.py"} --config {config} > tuner.log 2>&1 & echo $! > {pid_file}; wait'
    env = {**os.environ, "FOREIGN_KEYBOARD_INTERRUPT": "1"}
    shell = subprocess.Popen(["bash", "-c", script], cwd=tmp_path, env=env, start_new_session=True)
    gen = tmp_path / "runs" / "foreign" / "generations" / "gen_0000"
    try:
        tuner = int(kit.wait_for(lambda: pid_file.read_text().strip() if pid_file.exists() else "", 30, "the tuner"))
        kit.wait_for(lambda: list(gen.glob("ckpt-*.npz")), 120, "the trainer's first epoch")
        trainer = read_pid_file(gen)
        os.kill(tuner, signal.SIGTERM)  # how a script stops it: `kill $pid`
        assert shell.wait(120) == 0
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)
            shell.wait(10)
    _saved_on_keyboard_interrupt(gen)  # on the tuner's SIGINT, not killed by the SIGTERM escalation
    assert "ended after SIGINT (exit 0" in (tmp_path / "tuner.log").read_text()
    assert not pid_alive(trainer["pid"], trainer["start_ticks"])
    (t0, requeued) = kit.load_study(cfg).get_trials()
    assert t0.state == TrialState.FAIL and requeued.state == TrialState.WAITING
