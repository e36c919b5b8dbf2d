"""``kill -9`` of the tuner mid-generation, then the same command again: nothing is lost.

The tuner runs as ``python smart_tuner.py --config ...`` in its own process (the spec's entry
point); the test kills it with SIGKILL while generation 1 is training, so the trainer is orphaned.
"""

from __future__ import annotations

import filecmp
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from optuna.trial import TrialState

from tests.helpers import read_train_state
from tests.integration.smart_tuner.fixtures import tuner_testkit as kit
from ttsops.registry.model_registry import BEST_FILE
from ttsops.smart_tuner.study import history
from ttsops.smart_tuner.trainer.generation import RunnerConfig
from ttsops.smart_tuner.trainer.metrics_store import MetricsStore
from ttsops.smart_tuner.trainer.trainer_wrapper import LOG_FILE, pid_alive, read_pid_file
from ttsops.smart_tuner.tuner import Tuner
from ttsops.train.adapter import Tacotron2Adapter

REPO = Path(__file__).resolve().parents[3]


def _start_tuner(config: Path, tmp_path: Path) -> subprocess.Popen:
    log = open(tmp_path / "tuner.log", "ab")  # noqa: SIM115  (closed by the child's exit)
    return subprocess.Popen(
        [sys.executable, str(REPO / "smart_tuner.py"), "--config", str(config)],
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


@pytest.mark.parametrize("orphan_dies_too", [False, True], ids=["orphan-alive", "orphan-gone"])
@pytest.mark.usefixtures("mlflow_uri")
def test_kill_minus_nine_of_the_tuner_then_resume_loses_nothing(tmp_path, orphan_dies_too):
    data = kit.foreign_config(tmp_path, n_trials=3, epochs=5, adapter=kit.foreign_adapter_dict(epoch_seconds=0.6))
    config, cfg = kit.write_config(tmp_path, data)
    tuner = _start_tuner(config, tmp_path)
    study_dir = tmp_path / "runs" / "foreign"
    gen1 = study_dir / "generations" / "gen_0001"
    try:
        kit.wait_for(lambda: list(gen1.glob("ckpt-*.npz")), 120, "generation 1 to be training")
    finally:
        tuner.send_signal(signal.SIGKILL)
        tuner.wait(10)
    before = {t.number: t for t in kit.load_study(cfg).get_trials()}
    assert before[0].state == TrialState.COMPLETE and before[1].state == TrialState.RUNNING
    orphan = read_pid_file(gen1)
    assert pid_alive(orphan["pid"], orphan["start_ticks"])  # its own session: kill -9 did not reach it
    if orphan_dies_too:
        os.kill(orphan["pid"], signal.SIGKILL)
        kit.wait_for(lambda: not pid_alive(orphan["pid"], orphan["start_ticks"]), 10, "the orphan to die")

    summary = Tuner(cfg, runner_cfg=RunnerConfig(poll_s=0.1, heartbeat_s=1.0), trainer=Tacotron2Adapter(cfg.adapter)).run()  # same config again

    assert summary.status == "finished"
    assert not pid_alive(orphan["pid"], orphan["start_ticks"])
    trials = {t.number: t for t in kit.load_study(cfg).get_trials()}
    t0 = trials[0]  # the completed generation is untouched
    assert (t0.state, t0.value, t0.datetime_complete) == (before[0].state, before[0].value, before[0].datetime_complete)
    assert trials[1].state == TrialState.FAIL
    (retry,) = [t for t in trials.values() if t.user_attrs.get("retry_of") == 1]
    assert retry.state == TrialState.COMPLETE and retry.params == trials[1].params
    plan = retry.user_attrs[history.PLAN_ATTR]  # a preemption: it resumed generation 1's checkpoint
    assert plan["mode"] == "resume" and plan["source"].startswith(f"generation 1: {gen1}")
    assert sorted(retry.intermediate_values) == [1, 2, 3, 4, 5]  # one curve across the two trials
    assert history.generation_rows(list(trials.values()))[1]["state"] == "PREEMPTED"
    assert history.generations_used(list(trials.values())) == 3
    assert sum(t.state == TrialState.COMPLETE for t in trials.values()) == 3
    if not orphan_dies_too:  # stopped with SIGINT: it wrote a checkpoint that loads
        assert "stopped at step" in (gen1 / LOG_FILE).read_text()
    with np.load(sorted(gen1.glob("ckpt-*.npz"))[-1]) as ck:
        assert int(ck["step"]) >= 10

    parent, children = kit.study_runs(cfg)  # still one parent run, now finished
    assert parent.info.status == "FINISHED"
    by_trial = {int(c.data.tags["ttsops.trial"]): c for c in children}
    assert by_trial[1].info.status == "KILLED" and by_trial[1].data.tags["ttsops.state"] == "interrupted"
    assert by_trial[retry.number].data.tags["ttsops.retry_of_trial"] == "1"
    with MetricsStore(study_dir / "metrics.db") as store:
        assert [s for s, _ in store.curve(0, "val_loss")] == [10, 20, 30, 40, 50]

    best = min((t for t in trials.values() if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert filecmp.cmp(study_dir / BEST_FILE, best.user_attrs[history.CKPT_ATTR], shallow=False)
    champion = kit.mlflow_client(cfg).get_model_version_by_alias("foreign-mlp", "champion")
    assert champion.run_id == best.user_attrs[history.RUN_ID_ATTR]


@pytest.mark.slow
@pytest.mark.usefixtures("mlflow_uri")
def test_real_train_py_orphan_is_stopped_with_a_checkpoint_and_requeued(tmp_path, tiny_corpus):
    from ttsops.model.inference import Synthesizer

    config, cfg = kit.write_config(tmp_path, kit.real_config(tmp_path, tiny_corpus, n_trials=2, epochs=2))
    tuner = _start_tuner(config, tmp_path)
    study_dir = tmp_path / "runs" / "real"
    gen1 = study_dir / "generations" / "gen_0001"
    try:
        kit.wait_for(lambda: read_train_state(gen1), 600, "generation 1's train.py to be running")
    finally:
        tuner.send_signal(signal.SIGKILL)
        tuner.wait(10)
    orphan = read_pid_file(gen1)
    assert pid_alive(orphan["pid"], orphan["start_ticks"])

    summary = Tuner(cfg, runner_cfg=RunnerConfig(poll_s=0.2, heartbeat_s=2.0), trainer=Tacotron2Adapter(cfg.adapter)).run()

    assert summary.status == "finished" and not pid_alive(orphan["pid"], orphan["start_ticks"])
    state = read_train_state(gen1)
    assert state["status"] == "stopped"  # SIGINT: train.py wrote its checkpoint and exited
    Synthesizer.from_checkpoint(state["last_checkpoint"], device="cpu")
    trials = {t.number: t for t in kit.load_study(cfg).get_trials()}
    assert trials[0].state == TrialState.COMPLETE and trials[1].state == TrialState.FAIL
    (retry,) = [t for t in trials.values() if t.user_attrs.get("retry_of") == 1]
    assert retry.state == TrialState.COMPLETE and retry.params == trials[1].params
    plan = retry.user_attrs[history.PLAN_ATTR]  # train.py resumed generation 1's checkpoint exactly
    assert plan["mode"] == "resume" and plan["source"].startswith(f"generation 1: {gen1}")
    retry_state = read_train_state(Path(retry.user_attrs[history.GEN_DIR_ATTR]))
    assert retry_state["epoch"] == plan["epoch_base"] + 2 and retry_state["status"] == "finished"
    parent, children = kit.study_runs(cfg)
    assert parent.info.status == "FINISHED"
    assert {int(c.data.tags["ttsops.trial"]): c.info.status for c in children}[1] == "KILLED"
    best = min((t for t in trials.values() if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert filecmp.cmp(study_dir / BEST_FILE, best.user_attrs[history.CKPT_ATTR], shallow=False)
