"""train.py's set-up: bad input is one line naming the file and the key, before any model is built."""

from __future__ import annotations

import pytest

from ttsops.errors import ConfigError
from ttsops.train.setup import resolve_setup


def test_unknown_config_hparam_names_file_and_key(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("training:\n  hparams: {batchsize: 3}\n")
    with pytest.raises(ConfigError) as e:
        resolve_setup(["-o", str(tmp_path / "out"), "--config", str(config)])
    msg = str(e.value)
    assert "c.yaml: training.hparams: unknown hparam 'batchsize' (did you mean batch_size?)" in msg
    assert "\n" not in msg


def test_train_gets_only_its_sections(tmp_path, tiny_dataset):
    config = tmp_path / "c.yaml"
    config.write_text("core_engine:\n  n_trials: 3\nresources:\n  device: cpu\n")
    s = resolve_setup(["-o", str(tmp_path / "out"), "--config", str(config), "--dataset", str(tiny_dataset)])
    assert s.cfg.resources.device == "cpu" and not hasattr(s.cfg, "core_engine")
    assert "n_trials: 3" in s.config_yaml  # the whole file is still what the run logs
