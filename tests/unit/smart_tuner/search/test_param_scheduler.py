"""ParamScheduler: --hparams strings that train.py parses back, and restart plans as a table."""

from __future__ import annotations

from pathlib import Path

import pytest

from ttsops.errors import ConfigError
from ttsops.smart_tuner.search.param_scheduler import ParamScheduler, RestartPlan, changed_keys
from ttsops.train.adapter import Tacotron2Adapter
from ttsops.train.hparams import HParams

CKPT = Path("/ckpt/checkpoint_00001000.pt")
BASE = HParams().to_dict()
T2 = Tacotron2Adapter()


def test_string_round_trips_through_train_py_parser():
    ps = ParamScheduler({"epochs": 3, "batch_size": 8}, trainer=T2)
    params = {
        "learning_rate": 1.2345678901234e-05,
        "mel_fmax": None,
        "batch_size": 24,
        "variational_dropout": True,
        "dropout_decoder": 0.1,
    }
    s = ps.hparams_string(params)
    assert s == (
        "batch_size=24,dropout_decoder=0.1,epochs=3,learning_rate=1.2345678901234e-05,"
        "mel_fmax=null,variational_dropout=true"
    )
    h = HParams().with_string(s)
    assert (h.learning_rate, h.mel_fmax, h.batch_size, h.variational_dropout, h.epochs) == (
        1.2345678901234e-05,
        None,
        24,
        True,
        3,
    )


def test_string_refuses_separators_in_values():
    with pytest.raises(ConfigError, match="opt"):
        ParamScheduler(trainer=T2).hparams_string({"opt": "a,b"})


@pytest.mark.parametrize(
    ("new", "ckpt_hp", "mode", "changed", "reason_has"),
    [
        ({}, BASE, "resume", (), "exact resume"),
        ({"learning_rate": 1e-3}, BASE, "resume", (), "exact resume"),  # equal to the checkpoint's
        ({"epochs": 7}, BASE, "resume", ("epochs",), "run length"),
        (
            {"learning_rate": 5e-4, "dropout_decoder": 0.2},
            BASE,
            "warm_start",
            ("dropout_decoder", "learning_rate"),
            "warm-restart-safe",
        ),
        (
            {"batch_size": 48, "grad_clip_thresh": 0.7},
            BASE,
            "warm_start",
            ("batch_size", "grad_clip_thresh"),
            "warm-restart-safe",
        ),
        ({"decoder_rnn_dim": 768}, BASE, "warm_start", ("decoder_rnn_dim",), "shape changed"),
        (
            {"encoder_embedding_dim": 256, "learning_rate": 2e-3},
            BASE,
            "warm_start",
            ("encoder_embedding_dim", "learning_rate"),
            "architecture",
        ),
        ({"mel_fmax": None}, BASE, "fresh", ("mel_fmax",), "mels change meaning"),
        (
            {"mel_fmax": 7600.0, "decoder_rnn_dim": 768},
            BASE,
            "fresh",
            ("decoder_rnn_dim", "mel_fmax"),
            "feature",
        ),
        ({"n_mel_channels": 64}, BASE, "fresh", ("n_mel_channels",), "feature"),
        ({"val_fraction": 0.1}, BASE, "warm_start", ("val_fraction",), "not comparable"),
        ({"learning_rate": 5e-4}, None, "warm_start", (), "unknown"),
        ({"mel_fmax": 8000}, {**BASE, "mel_fmax": 8000.0}, "resume", (), "exact resume"),  # int == float
        ({"mel_fmax": "null"}, {**BASE, "mel_fmax": None}, "resume", (), "exact resume"),
    ],
)
def test_plan_table(new, ckpt_hp, mode, changed, reason_has):
    plan = ParamScheduler(trainer=T2).plan(new, CKPT, ckpt_hp)
    assert isinstance(plan, RestartPlan)
    assert (plan.mode, plan.changed) == (mode, changed)
    assert reason_has in plan.reason
    assert plan.checkpoint == (None if mode == "fresh" else CKPT)


def test_no_checkpoint_means_fresh():
    plan = ParamScheduler(trainer=T2).plan({"learning_rate": 1e-4}, None, None)
    assert (plan.mode, plan.checkpoint) == ("fresh", None)


def test_configured_feature_warm_start_says_it_is_risky():
    ps = ParamScheduler(trainer=T2, on_feature_change="warm_start")
    plan = ps.plan({"mel_fmax": 7600.0}, CKPT, BASE)
    assert plan.mode == "warm_start" and "RISKY" in plan.reason and plan.checkpoint == CKPT


def test_configured_architecture_fresh():
    plan = ParamScheduler(trainer=T2, on_architecture_change="fresh").plan({"prenet_dim": 128}, CKPT, BASE)
    assert plan.mode == "fresh" and plan.changed == ("prenet_dim",)


def test_base_hparams_count_in_the_plan():
    ps = ParamScheduler({"decoder_rnn_dim": 768}, trainer=T2)
    assert ps.plan({}, CKPT, BASE).changed == ("decoder_rnn_dim",)
    assert ps.plan({}, CKPT, {**BASE, "decoder_rnn_dim": 768}).mode == "resume"


@pytest.mark.parametrize(
    ("new", "old", "expected"),
    [
        ({"learning_rate": "0.001"}, {"learning_rate": 1e-3}, ()),
        ({"batch_size": 32.0}, {"batch_size": 32}, ()),
        ({"weight_decay": 1e-6}, {}, ()),  # absent in an old checkpoint: the default
        ({"weight_decay": 1e-5}, {}, ("weight_decay",)),
        ({"foreign_key": 1}, {"foreign_key": 2}, ("foreign_key",)),
        ({"foreign_key": 1}, {"foreign_key": 1}, ()),
    ],
)
def test_changed_keys_table(new, old, expected):
    assert changed_keys(new, old, T2) == expected
