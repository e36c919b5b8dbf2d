"""Preemption is not failure: ``kill -9`` of the tuner, of its trainer, or of both, at random, with the
tuner restarted after each of its deaths, must end with the configured number of COMPLETE
generations, every checkpoint loadable and the preemptions counted in the summary. Real processes:
``smart_tuner.py`` with the foreign numpy trainer, a real Optuna SQLite study and MLflow store."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from optuna.trial import TrialState

from tests.integration.smart_tuner.fixtures import tuner_testkit as kit
from ttsops.smart_tuner.study import history
from ttsops.smart_tuner.trainer.generation import RunnerConfig
from ttsops.smart_tuner.trainer.trainer_wrapper import LOG_FILE, pid_alive, read_pid_file
from ttsops.smart_tuner.tuner import Tuner

REPO = Path(__file__).resolve().parents[3]
SEED, KILLS, N_TRIALS, EPOCHS = 2112, 10, 4, 4


class TunerProcess:
    """``smart_tuner.py --config ...`` as its own process, restartable; logs appended to one file."""

    def __init__(self, config: Path, cwd: Path) -> None:
        self.config, self.cwd, self.proc = config, cwd, None
        self.starts = 0

    def start(self) -> None:
        with open(self.cwd / "tuner.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(REPO / "smart_tuner.py"), "--config", str(self.config)],
                cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT,
            )
        self.starts += 1

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


def running_trainer(gens: Path, orphans: set[int]) -> dict | None:
    """The pid file of a trainer that is alive, past its start-up (it printed its first line) and
    not an orphan of a killed tuner (the restarted tuner stops those itself)."""
    for gen in sorted(gens.glob("gen_*"), reverse=True):
        info = read_pid_file(gen)
        if (info and info["pid"] not in orphans and pid_alive(info["pid"], info["start_ticks"])
                and "from step" in _last_attempt(gen)):
            return info
    return None


def _last_attempt(gen: Path) -> str:
    try:
        return (gen / LOG_FILE).read_text().rsplit("=== ttsops tuner:", 1)[-1]
    except OSError:
        return ""


def inject(tuner: TunerProcess, gens: Path, rng: random.Random) -> int:
    """``KILLS`` random kill -9s, each while a trainer is mid-generation; the preemptions they made."""
    landed, wait, orphans = 0, threading.Event(), set()
    while landed < KILLS:
        target, delay = rng.choice(["tuner", "trainer", "both"]), rng.uniform(0.1, 1.5)
        info = kit.wait_for(lambda: running_trainer(gens, orphans), 120, "a running trainer")
        wait.wait(delay)
        if not pid_alive(info["pid"], info["start_ticks"]) or tuner.proc.poll() is not None:
            continue  # it finished (or the tuner moved on) meanwhile: no kill, no preemption
        if target in ("tuner", "both"):
            tuner.kill()
            orphans.add(info["pid"])
        if target in ("trainer", "both"):
            os.kill(info["pid"], signal.SIGKILL)
        landed += 1
        if tuner.proc.poll() is not None:
            tuner.start()
    return landed


@pytest.mark.slow  # about 2 minutes here: 10 kills, several tuner restarts
@pytest.mark.usefixtures("mlflow_uri")
def test_random_kill_minus_nine_of_tuner_and_trainer_loses_nothing(tmp_path):
    adapter = kit.foreign_adapter_dict(epoch_seconds=0.6, max_retries=0, max_consecutive_preemptions=KILLS + 1)
    data = kit.foreign_config(tmp_path, n_trials=N_TRIALS, epochs=EPOCHS, adapter=adapter,
                              extra={"smart_early_stopping": {"enabled": False}})
    config, cfg = kit.write_config(tmp_path, data)
    tuner = TunerProcess(config, tmp_path)
    tuner.start()
    gens = tmp_path / "runs" / "foreign" / "generations"
    try:
        landed = inject(tuner, gens, random.Random(SEED))
        assert tuner.proc.wait(600) == 0, (tmp_path / "tuner.log").read_text()[-3000:]
    finally:
        if tuner.proc.poll() is None:
            tuner.kill()
    trials = kit.load_study(cfg).get_trials()
    again = history.requeued_numbers(trials)
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == N_TRIALS and history.generations_used(trials) == N_TRIALS
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert all(history.shown_state(t, again) == "PREEMPTED" for t in failed)  # no FAIL counts
    for t in done:  # every line is one curve of EPOCHS epochs, resumed or not
        assert sorted(t.intermediate_values) == list(range(1, EPOCHS + 1)), (t.number, t.intermediate_values)
    summary = json.loads((tmp_path / "runs" / "foreign" / "summary.json").read_text())
    assert summary["stats"]["preemptions"] == landed == KILLS
    assert sum(r["preemptions"] for r in summary["rows"]) == KILLS
    assert {r["state"] for r in summary["rows"]} <= {"COMPLETE", "PRUNED", "PREEMPTED"}
    resumed = [t for t in trials if history.RESUME_ATTR in t.user_attrs and t.user_attrs[history.PLAN_ATTR]["mode"] == "resume"]
    assert resumed and all("--resume-from" in _last_attempt(Path(t.user_attrs[history.GEN_DIR_ATTR])) or
                           "--resume-from" in (Path(t.user_attrs[history.GEN_DIR_ATTR]) / LOG_FILE).read_text()
                           for t in resumed)
    ckpts = sorted(gens.glob("gen_*/ckpt-*.npz"))
    assert ckpts and not list(gens.glob("gen_*/.ckpt-*.tmp.npz"))
    for path in ckpts:  # every checkpoint loads
        with np.load(path) as ck:
            assert int(ck["step"]) > 0 and ck["W0"].shape == (3, 8)
    assert tuner.starts > 1


@pytest.mark.usefixtures("mlflow_uri")
def test_a_preemption_loop_is_bounded_and_then_fails(tmp_path, monkeypatch):
    """A trainer killed at the same point on every run (an OOM at step 1) is not preempted forever."""
    monkeypatch.setenv("FOREIGN_KILL_SELF", "1")
    adapter = kit.foreign_adapter_dict(max_retries=5, max_consecutive_preemptions=2)
    _, cfg = kit.write_config(tmp_path, kit.foreign_config(tmp_path, n_trials=1, epochs=2, adapter=adapter))
    summary = Tuner(cfg, runner_cfg=RunnerConfig(poll_s=0.1, heartbeat_s=1.0)).run()
    (t,) = kit.load_study(cfg).get_trials()
    result = t.user_attrs[history.RESULT_ATTR]
    assert t.state == TrialState.FAIL and "preempted 3 times in a row" in result["reason"]
    assert result["preemptions"] == 3 and result["attempts"] == 3  # the retries were never used
    assert summary.stats["preemptions"] == 3 and summary.rows[0]["state"] == "FAIL"
