"""What the model reads: characters (the default) or English phonemes, as symbol ids.

``HParams.text_frontend`` picks one; the checkpoint records it, so inference reads text the way the
model was trained. Each frontend has its own symbol table (id 0 padding, id 1 end of sequence), so
a character model keeps its ids when phonemes are added.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ttsops.errors import ConfigError
from ttsops.text.cleaners import english_cleaners
from ttsops.text.phonemes import IPA_SYMBOLS, Phonemizer
from ttsops.text.symbols import EOS, EOS_ID, PAD, PUNCTUATION, SYMBOLS

FRONTENDS = ("characters", "phonemes")
PHONEME_SYMBOLS: list[str] = [PAD, EOS, *PUNCTUATION, *dict.fromkeys(c for c in IPA_SYMBOLS if c not in PUNCTUATION)]


@dataclass
class TextFrontend:
    name: str
    symbols: list[str]
    _ids: dict[str, int] = field(init=False, repr=False)
    _phonemizer: Phonemizer | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._ids = {s: i for i, s in enumerate(self.symbols)}

    def units(self, texts: Sequence[str], clean: bool = True) -> list[str]:
        """The strings the model reads: cleaned text, or its phonemes."""
        cleaned = [english_cleaners(t) if clean else t for t in texts]
        return self._phonemizer(cleaned) if self._phonemizer is not None else cleaned

    def to_ids(self, texts: Sequence[str], clean: bool = True) -> list[list[int]]:
        """Each text as ids with EOS appended; symbols outside the table are dropped."""
        return [[self._ids[c] for c in u if c in self._ids and c not in (PAD, EOS)] + [EOS_ID]
                for u in self.units(texts, clean)]


def text_frontend(name: str, memo_file: Path | None = None) -> TextFrontend:
    """``memo_file``: where phonemes are remembered between processes (train.py: in the mel cache)."""
    if name == "characters":
        return TextFrontend(name, SYMBOLS)
    if name == "phonemes":
        return TextFrontend(name, PHONEME_SYMBOLS, Phonemizer(memo_file))
    raise ConfigError(f"text_frontend={name!r}: expected one of {', '.join(FRONTENDS)}")
