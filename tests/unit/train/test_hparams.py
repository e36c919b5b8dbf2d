import pytest

from ttsops.errors import ConfigError
from ttsops.train.hparams import ARCHITECTURE_KEYS, FEATURE_KEYS, HParams, parse_hparams_string


def test_string_overrides_are_typed() -> None:
    hp = HParams().with_string("batch_size=16, learning_rate=3e-4,mel_fmax=null,variational_dropout=true")
    assert (hp.batch_size, hp.learning_rate, hp.mel_fmax, hp.variational_dropout) == (16, 3e-4, None, True)
    assert hp.mel.fmax is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("batch_sise=8", "unknown hparam 'batch_sise' (did you mean batch_size"),
        ("batch_size=eight", "hparam batch_size='eight': expected int"),
        ("batch_size=1.5", "expected int"),
        ("variational_dropout=maybe", "expected bool"),
        ("learning_rate", "expected key=value"),
    ],
)
def test_bad_hparams_fail_with_one_line(spec: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        HParams().with_string(spec)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_empty_string_changes_nothing_and_key_sets_are_fields() -> None:
    assert parse_hparams_string("") == {} and HParams().with_string(" ") == HParams()
    fields = set(HParams().to_dict())
    assert ARCHITECTURE_KEYS <= fields and FEATURE_KEYS <= fields


@pytest.mark.parametrize(("key", "value", "message"), [
    ("text_frontend", "graphemes", "expected one of characters, phonemes"),
    ("drop_frame_rate", "1.5", r"expected a value in \[0, 1\]"),
    ("intelligibility_every", "-2", r"expected a value in \[-1, inf\]"),
    ("intelligibility_sentences", "21", r"expected a value in \[1, 20\]"),
    ("batch_size", "0", r"hparam batch_size=0: expected a value in \[1, inf\]"),  # was range()'s ValueError
    ("log_every_steps", "0", r"expected a value in \[1, inf\]"),  # was a modulo by zero
    ("hop_length", "-256", r"expected a value in \[1, inf\]"),
    ("val_fraction", "1.5", r"expected a value in \[0, 1\]"),
])
def test_new_keys_out_of_range_are_one_clear_error(key, value, message) -> None:
    with pytest.raises(ConfigError, match=message):
        HParams().with_string(f"{key}={value}")


def test_every_default_and_the_shipped_configs_are_in_range() -> None:
    from tests.helpers import TINY

    assert HParams().replace(**HParams().to_dict()) == HParams()
    assert HParams().replace(**TINY).batch_size == TINY["batch_size"]
    assert HParams().with_string("mel_fmax=null").mel_fmax is None  # None passes a range check
