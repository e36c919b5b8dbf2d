"""The one k=v hparams formatter and parser: what one writes, the other (and train.py) reads back."""

from __future__ import annotations

import pytest

from ttsops.errors import ConfigError
from ttsops.infra.kv import format_hparams, parse_hparams
from ttsops.train.hparams import HParams


@pytest.mark.parametrize(
    ("hparams", "text"),
    [
        ({}, ""),
        ({"b": 2, "a": 1}, "a=1,b=2"),  # sorted
        ({"lr": 1.2345678901234e-05, "x": None, "on": True, "off": False}, "lr=1.2345678901234e-05,off=false,on=true,x=null"),
    ],
)
def test_format_table(hparams, text):
    assert format_hparams(hparams) == text
    assert parse_hparams(text) == {k: v for k, v in (i.split("=") for i in text.split(",") if i)}


def test_floats_round_trip_exactly_through_train_py():
    h = HParams().with_string(format_hparams({"learning_rate": 1.2345678901234e-05, "mel_fmax": None}))
    assert (h.learning_rate, h.mel_fmax) == (1.2345678901234e-05, None)


@pytest.mark.parametrize("spec", ["a", "=1", "a=1,b"])
def test_parse_refuses_entries_without_a_key_and_value(spec):
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_hparams(spec)


def test_parse_skips_blanks_and_strips():
    assert parse_hparams(" a = 1 ,, b=x ") == {"a": "1", "b": "x"} and parse_hparams(None) == {}


def test_format_refuses_separators_in_values():
    with pytest.raises(ConfigError, match="opt"):
        format_hparams({"opt": "a,b"})
