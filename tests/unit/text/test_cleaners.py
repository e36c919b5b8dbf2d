import re

import pytest

from ttsops.text import english_cleaners, ids_to_text, text_to_ids
from ttsops.text.cleaners import SPEAKABLE_PATTERN


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Hello, World!", "hello, world!"),
        ("Dr. Smith met Mr. Jones.", "doctor smith met mister jones."),
        ("It costs $3.50", "it costs three dollars and fifty cents"),
        ("the 21st century", "the twenty first century"),
        ("in 1984 we had 2 cats", "in nineteen eighty four we had two cats"),
        ("1,000 people", "one thousand people"),
        ("50% off", "fifty percent off"),
        ("Café  déjà   vu", "cafe deja vu"),
        ("well-known", "well known"),
    ],
)
def test_english_cleaners(raw: str, clean: str) -> None:
    assert english_cleaners(raw) == clean


def test_ids_round_trip_and_eos() -> None:
    ids = text_to_ids("Hi there.")
    assert ids[-1] == 1
    assert ids_to_text(ids) == "hi there."


def test_symbols_outside_the_table_are_dropped() -> None:
    assert ids_to_text(text_to_ids("a#b*c")) == "a b c"


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("9" * 400, " ".join(["nine"] * 400)),  # past num2words' range (10**300): digit by digit
        ("1" * 320 + ".5", " ".join(["one"] * 320 + ["point", "five"])),  # float() is inf
        ("the " + "2" * 310 + "th", "the " + " ".join(["two"] * 310)),
        ("$" + "3" * 310, " ".join(["three"] * 310) + " dollars"),
        ("a\ud800b \udfffc", "ab c"),  # lone surrogates (a JSON string can carry them) are dropped
    ],
)
def test_every_text_cleans_without_an_error(raw: str, clean: str) -> None:
    assert english_cleaners(raw) == clean


def test_each_speakable_character_cleans_to_letters() -> None:
    # the service's schema admits a text with one character of SPEAKABLE_PATTERN: each must leave a letter
    speakable = [chr(c) for c in range(0x250) if re.fullmatch(SPEAKABLE_PATTERN, chr(c))]
    assert len(speakable) == 10 + 52 + 23 + 31 + 136
    for c in speakable:
        assert re.search("[a-z]", english_cleaners(f"({c}!)")), repr(c)
    assert not re.search(SPEAKABLE_PATTERN, " !?~_#\u00d7\u00f7\u0180")  # no letter: refused by the schema
