"""Building one launch's command line and environment (pure: no process, no files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.smart_tuner.fixtures.tuner_testkit import foreign_adapter
from ttsops.config import AdapterConfig
from ttsops.errors import ConfigError
from ttsops.smart_tuner.trainer.command import HPARAMS_ENV, Checkpoint, LaunchSpec, build_command


def _spec(tmp_path: Path, **kw) -> LaunchSpec:
    base = dict(generation=3, gen_dir=tmp_path / "gen", hparams={"lr": 0.1, "layers": 2}, epochs=3)
    base.update(kw)
    return LaunchSpec(**base)


def test_hparams_flag_style_adds_epochs_and_run_env(tmp_path):
    adapter = AdapterConfig()
    spec = _spec(
        tmp_path,
        config_path=tmp_path / "c.yaml",
        run_id="abc",
        tracking_uri="sqlite:///x.db",
        checkpoint=Checkpoint("warm_start", tmp_path / "best_model.pt"),
        hparams={"learning_rate": 0.001, "mel_fmax": None},
    )
    argv, env = build_command(adapter, spec, python="py")
    assert argv[:3] == ["py", "-m", "ttsops.train"]
    assert argv[argv.index("--run_id") + 1] == "abc"  # our train.py: the flag; any trainer: the env
    assert argv[argv.index("--tracking_uri") + 1] == "sqlite:///x.db"
    assert argv[argv.index("--hparams") + 1] == "epochs=3,learning_rate=0.001,mel_fmax=null"  # sorted, as the tuner writes it
    assert argv[-3:] == ["--checkpoint_path", str(tmp_path / "best_model.pt"), "--warm_start"]
    assert env["MLFLOW_RUN_ID"] == "abc" and env["MLFLOW_TRACKING_URI"] == "sqlite:///x.db"


def test_cli_flags_style_and_resume(tmp_path):
    spec = _spec(tmp_path, checkpoint=Checkpoint("resume", tmp_path / "ckpt-000010.npz"))
    argv, env = build_command(foreign_adapter(), spec, python="py")
    assert argv[argv.index("--lr") + 1] == "0.1" and argv[argv.index("--layers") + 1] == "2"
    assert argv[argv.index("--epochs") + 1] == "3"
    assert argv[-2:] == ["--resume-from", str(tmp_path / "ckpt-000010.npz")]
    assert "MLFLOW_RUN_ID" not in env and HPARAMS_ENV not in env


def test_env_json_style_and_fresh(tmp_path):
    adapter = AdapterConfig(command=["{python}", "t.py", "{output_dir}"], hparams_style="env_json")
    argv, env = build_command(adapter, _spec(tmp_path, hparams={"a": None, "b": True}), python="py")
    assert argv == ["py", "t.py", str(tmp_path / "gen")]
    assert json.loads(env[HPARAMS_ENV]) == {"a": None, "b": True}


@pytest.mark.parametrize("part, needle", [("{nope}", "bad placeholder"), ("{config}", "no config")])
def test_bad_placeholders_name_the_problem(tmp_path, part, needle):
    adapter = AdapterConfig(command=["{python}", part])
    with pytest.raises(ConfigError, match=needle):
        build_command(adapter, _spec(tmp_path))
