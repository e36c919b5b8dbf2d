import pytest

from ttsops.text import english_cleaners, ids_to_text, text_to_ids


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
