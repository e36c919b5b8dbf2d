"""Text frontend: English cleaners and the symbol table (text <-> ids)."""

from ttsops.text.cleaners import english_cleaners
from ttsops.text.symbols import PAD_ID, SYMBOLS, ids_to_text, text_to_ids

__all__ = ["PAD_ID", "SYMBOLS", "english_cleaners", "ids_to_text", "text_to_ids"]
