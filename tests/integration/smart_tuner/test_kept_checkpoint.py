"""A generation keeps its best validation: value, metrics and checkpoint of the same state, with the
real tuner loop driving the foreign trainer (its checkpoints named by ``adapter.step_checkpoint``)."""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import numpy as np
import optuna
import pytest

from tests.integration.smart_tuner.fixtures.tuner_testkit import (
    foreign_adapter_dict,
    foreign_config,
    load_study,
    write_config,
)
from ttsops.registry.model_registry import BEST_FILE
from ttsops.smart_tuner.study import history
from ttsops.smart_tuner.trainer.generation import RunnerConfig
from ttsops.smart_tuner.trainer.kept import KEPT_DIR
from ttsops.smart_tuner.tuner import Tuner

FAST = RunnerConfig(poll_s=0.1, heartbeat_s=1.0)


def _study(tmp_path: Path, step_checkpoint: str | None):
    data = foreign_config(tmp_path, n_trials=1, epochs=6,
                          adapter=foreign_adapter_dict(epoch_seconds=0.3, step_checkpoint=step_checkpoint))
    _, cfg = write_config(tmp_path, data)
    (tmp_path / "runs").mkdir()
    study = optuna.create_study(study_name="foreign", storage=f"sqlite:///{tmp_path / 'runs' / 'optuna.db'}")
    study.enqueue_trial({"lr": 0.3, "layers": 2})
    Tuner(cfg, runner_cfg=FAST).run()
    (t,) = load_study(cfg).get_trials()
    return cfg, t


@pytest.mark.usefixtures("mlflow_uri")
def test_a_generation_that_got_worse_keeps_its_best_validation(tmp_path, monkeypatch):
    monkeypatch.setenv("FOREIGN_WORSEN_AFTER_EPOCH", "2")  # the loss rises from epoch 3 on
    cfg, t = _study(tmp_path, "ckpt-{step:06d}.npz")
    values = [t.intermediate_values[k] for k in sorted(t.intermediate_values)]
    assert len(values) == 6 and values[-1] > min(values)  # it did get worse
    assert t.value == pytest.approx(min(values))
    best_epoch = values.index(min(values)) + 1
    kept = Path(t.user_attrs[history.CKPT_ATTR])
    assert kept.parent.name == KEPT_DIR and kept.is_file()
    with np.load(kept) as ck:  # the weights of that validation (10 steps per epoch)
        assert int(ck["step"]) == 10 * best_epoch
    assert filecmp.cmp(kept, tmp_path / "runs" / "foreign" / BEST_FILE, shallow=False)
    meta = json.loads((tmp_path / "runs" / "foreign" / "best_model.json").read_text())
    assert meta["objective"] == pytest.approx(t.value)


@pytest.mark.usefixtures("mlflow_uri")
def test_without_a_step_checkpoint_the_generation_keeps_its_last_validation(tmp_path, monkeypatch):
    monkeypatch.setenv("FOREIGN_WORSEN_AFTER_EPOCH", "2")
    _, t = _study(tmp_path, None)
    values = [t.intermediate_values[k] for k in sorted(t.intermediate_values)]
    assert t.value == pytest.approx(values[-1]) and values[-1] > min(values)
    assert Path(t.user_attrs[history.CKPT_ATTR]).name == "ckpt-000060.npz"
