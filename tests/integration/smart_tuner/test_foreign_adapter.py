"""The tuner drives a trainer it did not ship, through the config's ``adapter`` section only.

The foreign trainer (fixtures/foreign_trainer.py) takes ``--lr``/``--layers`` flags, has its own
checkpoint flags and names its metrics ``loss/valid``, ``progress/epoch`` (TensorBoard) or
``valid_mse``, ``ep`` (MLflow, into the run named by ``MLFLOW_RUN_ID``)."""

from __future__ import annotations

import filecmp

import pytest
from optuna.trial import TrialState

from tests.integration.smart_tuner.fixtures.tuner_testkit import (
    foreign_adapter_dict,
    foreign_config,
    load_study,
    study_runs,
    write_config,
)
from ttsops import cli
from ttsops.registry.model_registry import BEST_FILE
from ttsops.smart_tuner.study import history
from ttsops.smart_tuner.trainer.generation import RunnerConfig
from ttsops.smart_tuner.trainer.metrics_store import MetricsStore
from ttsops.smart_tuner.tuner import Tuner


@pytest.mark.usefixtures("mlflow_uri")
def test_mlflow_logging_trainer_reports_into_the_child_run(tmp_path):
    adapter = foreign_adapter_dict(mlflow=True, epoch_seconds=0.2)
    _, cfg = write_config(tmp_path, foreign_config(tmp_path, n_trials=2, epochs=3, adapter=adapter))
    Tuner(cfg, runner_cfg=RunnerConfig(poll_s=0.1)).run()
    trials = load_study(cfg).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert all(sorted(t.intermediate_values) == [1, 2, 3] for t in trials)
    _, children = study_runs(cfg)
    for c in children:  # the trainer's own names, logged by the trainer into the tuner's run
        assert {"valid_mse", "train_mse", "ep", "objective"} <= set(c.data.metrics)
        assert "val_loss" not in c.data.metrics  # nothing mirrored: the trainer logs to MLflow itself
    with MetricsStore(tmp_path / "runs" / "foreign" / "metrics.db") as store:
        assert [s for s, _ in store.curve(0, "val_loss")] == [10, 20, 30]  # mapped names
        assert store.latency_stats()["count"] > 0


@pytest.mark.usefixtures("mlflow_uri")
def test_tensorboard_trainer_through_the_ttsops_tune_cli(tmp_path, capsys):
    config, cfg = write_config(tmp_path, foreign_config(tmp_path, n_trials=5, epochs=2))
    assert cli.main(["tune", "--config", str(config), "core_engine.n_trials=2"]) == 0
    assert "study foreign: finished" in capsys.readouterr().out
    trials = load_study(cfg).get_trials()
    assert len(trials) == 2 and all(t.state == TrialState.COMPLETE for t in trials)
    gen1 = tmp_path / "runs" / "foreign" / "generations" / "gen_0001"
    log = (gen1 / "train.log").read_text()  # warm start through the trainer's own flags
    assert "--resume-from" in log and "--lr" in log and "--layers" in log
    best = min(trials, key=lambda t: t.value)
    assert filecmp.cmp(
        tmp_path / "runs" / "foreign" / BEST_FILE, best.user_attrs[history.CKPT_ATTR], shallow=False
    )
    assert best.user_attrs[history.CKPT_ATTR].endswith(".npz")


@pytest.mark.usefixtures("mlflow_uri")
def test_bad_adapter_command_is_one_config_error_line(tmp_path, capsys):
    adapter = foreign_adapter_dict()
    adapter["command"] = [*adapter["command"], "{nonsense}"]
    config, _ = write_config(tmp_path, foreign_config(tmp_path, n_trials=1, adapter=adapter))
    assert cli.main(["tune", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "adapter.command" in err and "nonsense" in err and "Traceback" not in err


@pytest.mark.usefixtures("mlflow_uri")
def test_a_trainer_that_refuses_its_input_stops_the_study_with_its_reason(tmp_path, capsys):
    data = foreign_config(tmp_path, n_trials=5)
    data["search_space"]["lr"] = {"type": "uniform", "low": 20.0, "high": 30.0}  # the trainer says no
    config, cfg = write_config(tmp_path, data)
    assert cli.main(["tune", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "refused its input (exit 2)" in err and "foreign_trainer: bad --lr" in err
    (t,) = load_study(cfg).get_trials()  # one generation, not five
    assert t.state == TrialState.FAIL
