"""Symbol table: characters the model reads. Id 0 is padding, id 1 is end-of-sequence."""

from __future__ import annotations

from ttsops.text.cleaners import english_cleaners

PAD, EOS = "_", "~"
PUNCTUATION = "!'(),.:;? -"
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
SYMBOLS: list[str] = [PAD, EOS, *PUNCTUATION, *_LETTERS]
PAD_ID, EOS_ID = 0, 1
_SYMBOL_TO_ID = {s: i for i, s in enumerate(SYMBOLS)}


def text_to_ids(text: str, clean: bool = True) -> list[int]:
    """Clean ``text`` and map it to ids, appending EOS; unknown characters are dropped."""
    if clean:
        text = english_cleaners(text)
    return [_SYMBOL_TO_ID[c] for c in text if c in _SYMBOL_TO_ID and c not in (PAD, EOS)] + [EOS_ID]


def ids_to_text(ids: list[int]) -> str:
    return "".join(SYMBOLS[i] for i in ids if i not in (PAD_ID, EOS_ID))
