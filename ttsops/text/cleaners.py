"""English text normalisation used for training, transcripts and serving alike.

Order matters: transliterate to ASCII, lower-case, expand abbreviations, spell out numbers
(currency, ordinals, decimals, years via num2words), drop characters outside the symbol set,
collapse whitespace. Every input cleans without an error: a number num2words cannot say (past
~10**300) is read digit by digit, and lone surrogates (invalid Unicode a JSON string can carry) are
dropped.

``SPEAKABLE_PATTERN`` is what the service's request schema requires of a text: a text with one
character of that class cleans to at least one letter (tests/unit/text checks every character of it).
"""

from __future__ import annotations

import re

from num2words import num2words
from unidecode import unidecode

_ABBREVIATIONS = [
    (re.compile(rf"\b{abbr}\.", re.IGNORECASE), full)
    for abbr, full in [
        ("mrs", "misess"), ("mr", "mister"), ("dr", "doctor"), ("st", "saint"), ("co", "company"),
        ("jr", "junior"), ("maj", "major"), ("gen", "general"), ("drs", "doctors"), ("rev", "reverend"),
        ("lt", "lieutenant"), ("hon", "honorable"), ("sgt", "sergeant"), ("capt", "captain"),
        ("esq", "esquire"), ("ltd", "limited"), ("col", "colonel"), ("ft", "fort"), ("etc", "et cetera"),
        ("vs", "versus"), ("no", "number"),
    ]
]
_COMMA_NUMBER = re.compile(r"(\d)(,)(\d{3})")
_CURRENCY = re.compile(r"([$£€])(\d+(?:\.\d+)?)")
_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b")
_DECIMAL = re.compile(r"\b\d+\.\d+\b")
_NUMBER = re.compile(r"\b\d+\b")
_PERCENT = re.compile(r"(\d)\s*%")
_WHITESPACE = re.compile(r"\s+")
_ALLOWED = re.compile(r"[^a-z' ,.!?;:\-]")
_SURROGATES = re.compile("[\ud800-\udfff]")
_CURRENCY_NAMES = {"$": ("dollar", "cent"), "£": ("pound", "penny"), "€": ("euro", "cent")}
_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# a digit, an ASCII letter, or a Latin-1 / Latin Extended-A letter (é, ß, ł, œ): each cleans to letters.
# \uXXXX escapes read the same in Python's re, JSON Schema (ECMA 262) and pydantic's Rust regex
SPEAKABLE_PATTERN = r"[0-9A-Za-z\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u017F]"


def _words(number: str, to: str = "cardinal") -> str:
    """``number`` ('42', '3.5') in words; digit by digit where num2words cannot say it (it overflows
    past ~10**300), as one reads out a very long number."""
    try:
        return str(num2words(float(number) if "." in number else int(number), to=to))
    except (OverflowError, ValueError):  # ValueError: int() of more than 4300 digits
        return " ".join("point" if c == "." else _DIGITS[int(c)] for c in number)


def _currency(m: re.Match[str]) -> str:
    unit, sub = _CURRENCY_NAMES[m.group(1)]
    whole, _, frac = m.group(2).partition(".")
    parts = []
    if whole.strip("0") or not frac:
        parts.append(f"{_words(whole)} {unit}{'' if whole.lstrip('0') == '1' else 's'}")
    if frac and int(frac[:2].ljust(2, "0")):
        cents = int(frac[:2].ljust(2, "0"))
        parts.append(f"{num2words(cents)} {sub if cents == 1 else sub + 's'}")
    return " and ".join(parts)


def _number(m: re.Match[str]) -> str:
    digits = m.group(0)
    if len(digits) == 4 and 1000 < int(digits) < 3000 and int(digits) % 100:
        return _words(digits, to="year")
    return _words(digits)


def expand_numbers(text: str) -> str:
    text = _COMMA_NUMBER.sub(r"\1\3", text)
    text = _PERCENT.sub(r"\1 percent", text)
    text = _CURRENCY.sub(_currency, text)
    text = _ORDINAL.sub(lambda m: _words(m.group(1), to="ordinal"), text)
    text = _DECIMAL.sub(lambda m: _words(m.group(0)), text)
    return _NUMBER.sub(_number, text)


def english_cleaners(text: str) -> str:
    """Normalise English text to the symbol set: 'Dr. Smith paid $3.50' -> 'doctor smith paid
    three dollars and fifty cents'."""
    text = unidecode(_SURROGATES.sub("", text))
    for pattern, full in _ABBREVIATIONS:
        text = pattern.sub(full, text)
    text = expand_numbers(text).lower().replace("-", " ")
    text = _ALLOWED.sub(" ", text)
    return _WHITESPACE.sub(" ", text).strip()
