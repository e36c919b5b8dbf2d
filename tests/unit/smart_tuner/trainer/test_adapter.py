"""CommandAdapter: a trainer the tuner knows only through the config's adapter section."""

from __future__ import annotations

import os

import pytest

from ttsops.config import AdapterConfig
from ttsops.smart_tuner.trainer.adapter import CommandAdapter


def test_it_knows_no_hparam_but_the_epochs_it_sets():
    a = CommandAdapter()
    assert (a.restart_class("epochs"), a.restart_class("learning_rate")) == ("run", "unknown")
    assert a.normalise("lr", "0.10") == "0.10" and a.default("lr") is None
    a.check_hparams({"anything": object()})  # the trainer itself refuses what it cannot read
    assert a.hparams_string({"b": 0.5, "a": None}) == "a=null,b=0.5"


def test_latest_checkpoint_is_the_newest_glob_match(tmp_path):
    a = CommandAdapter(AdapterConfig(checkpoint_glob="ckpt-*.npz"))
    assert a.latest_checkpoint(tmp_path) is None and a.train_state(tmp_path) is None
    for i, name in enumerate(["ckpt-000020.npz", "ckpt-000010.npz", ".ckpt-000030.tmp"]):
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, ns=(i * 10**9, i * 10**9))
    assert a.latest_checkpoint(tmp_path) == tmp_path / "ckpt-000010.npz"  # newest by time, not by name


def test_checkpoint_at_names_a_step_by_the_template(tmp_path):
    a = CommandAdapter(AdapterConfig(step_checkpoint="ckpt-{step:06d}.npz"))
    assert a.checkpoint_at(tmp_path, 20) is None  # not written (or rotated away)
    (tmp_path / "ckpt-000020.npz").write_bytes(b"x")
    assert a.checkpoint_at(tmp_path, 20) == tmp_path / "ckpt-000020.npz"
    assert CommandAdapter(AdapterConfig(step_checkpoint=None)).checkpoint_at(tmp_path, 20) is None


def test_a_step_checkpoint_template_without_the_step_is_refused_in_one_line():
    from ttsops.config import parse_config
    from ttsops.errors import ConfigError

    for bad in ("ckpt.npz", "ckpt-{epoch}.npz", "sub/{step}.pt"):
        with pytest.raises(ConfigError, match="adapter.step_checkpoint") as e:
            parse_config({"adapter": {"step_checkpoint": bad}}, "tune.yaml")
        assert "\n" not in str(e.value)
