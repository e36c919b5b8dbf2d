"""The Tacotron2 adapter: what the tuner learns about train.py through the TrainerAdapter contract."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest

from ttsops.errors import ConfigError
from ttsops.smart_tuner.trainer.adapter import RESTART_CLASSES
from ttsops.train.adapter import WARM_RESTART_CLASS, Tacotron2Adapter
from ttsops.train.hparams import ARCHITECTURE_KEYS, FEATURE_KEYS, HParams

T2 = Tacotron2Adapter()


def test_every_hparam_is_classified():
    names = {f.name for f in fields(HParams)}
    assert set(WARM_RESTART_CLASS) == names, set(WARM_RESTART_CLASS) ^ names
    assert set(WARM_RESTART_CLASS.values()) <= set(RESTART_CLASSES)
    assert {WARM_RESTART_CLASS[k] for k in FEATURE_KEYS} == {"feature"}
    assert {WARM_RESTART_CLASS[k] for k in ARCHITECTURE_KEYS - FEATURE_KEYS} == {"architecture"}
    for key in ("learning_rate", "weight_decay", "dropout_decoder", "batch_size", "grad_clip_thresh"):
        assert T2.restart_class(key) == "safe"
    assert T2.restart_class("not_an_hparam") == "unknown"


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [("learning_rate", "0.001", 1e-3), ("batch_size", 32.0, 32), ("mel_fmax", "null", None), ("foreign", "x", "x")],
)
def test_values_compare_as_train_py_reads_them(key, value, expected):
    assert T2.normalise(key, value) == expected


def test_check_hparams_refuses_what_train_py_would():
    T2.check_hparams({"batch_size": 8})
    with pytest.raises(ConfigError, match="unknown hparam 'batchsize'"):
        T2.check_hparams({"batchsize": 3})


def test_latest_checkpoint_is_the_one_train_state_names(tmp_path):
    for name in ("checkpoint_00000010.pt", "checkpoint_00000020.pt", "checkpoint_best.pt"):
        (tmp_path / name).write_bytes(b"x")
    assert T2.train_state(tmp_path) is None
    (tmp_path / "train_state.json").write_text(json.dumps({"last_checkpoint": "checkpoint_00000020.pt", "epoch": 4}))
    assert T2.latest_checkpoint(tmp_path) == tmp_path / "checkpoint_00000020.pt"
    assert T2.train_state(tmp_path)["epoch"] == 4
