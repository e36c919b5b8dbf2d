import shutil

import pytest

from ttsops.errors import ConfigError
from ttsops.text.frontend import PHONEME_SYMBOLS, text_frontend
from ttsops.text.symbols import EOS_ID, SYMBOLS, text_to_ids

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng missing: run scripts/setup.sh (apt-get install espeak-ng)")


def test_characters_keep_the_character_ids() -> None:
    f = text_frontend("characters")
    assert f.symbols == SYMBOLS
    assert f.to_ids(["Dr. Smith, hello!"]) == [text_to_ids("Dr. Smith, hello!")]


@needs_espeak
def test_phonemes_read_words_as_ipa_and_keep_punctuation() -> None:
    f = text_frontend("phonemes")
    assert f.units(["The teacher, she left."]) == ["ðə tˈiːtʃɚ, ʃiː lˈɛft."]
    ids = f.to_ids(["Where did she put it?"])[0]
    assert ids[-1] == EOS_ID and PHONEME_SYMBOLS[ids[-2]] == "?"
    assert all(0 < i < len(PHONEME_SYMBOLS) for i in ids)


@needs_espeak
def test_phonemes_of_a_batch_match_one_at_a_time() -> None:
    texts = ["the birch canoe slid on the smooth planks.", "glue the sheet, to the dark blue background!",
             "it's easy to tell the depth of a well"]
    together = text_frontend("phonemes").units(texts)
    alone = [text_frontend("phonemes").units([t])[0] for t in texts]
    assert together == alone
    symbols = set(PHONEME_SYMBOLS)
    assert all(c in symbols for u in together for c in u), "espeak-ng produced a symbol outside the table"


def test_unknown_frontend_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="text_frontend='graphemes'"):
        text_frontend("graphemes")


@needs_espeak
def test_the_phoneme_memo_file_is_read_back_and_a_damaged_one_rebuilt(tmp_path) -> None:
    memo = tmp_path / "cache" / "phonemes.json"
    first = text_frontend("phonemes", memo).units(["the birch canoe, slid."])
    assert memo.is_file()
    again = text_frontend("phonemes", memo)
    assert again._phonemizer is not None and "the birch canoe" in again._phonemizer._memo  # read, not recomputed
    assert again.units(["the birch canoe, slid."]) == first
    memo.write_text("{not json")
    assert text_frontend("phonemes", memo).units(["the birch canoe, slid."]) == first
