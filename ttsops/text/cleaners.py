"""English text normalisation used for training, transcripts and serving alike.

Order matters: transliterate to ASCII, lower-case, expand abbreviations, spell out numbers
(currency, ordinals, decimals, years via num2words), drop characters outside the symbol set,
collapse whitespace.
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
_CURRENCY_NAMES = {"$": ("dollar", "cent"), "£": ("pound", "penny"), "€": ("euro", "cent")}


def _currency(m: re.Match[str]) -> str:
    unit, sub = _CURRENCY_NAMES[m.group(1)]
    whole, _, frac = m.group(2).partition(".")
    parts = []
    if int(whole) or not frac:
        parts.append(f"{num2words(int(whole))} {unit}{'' if int(whole) == 1 else 's'}")
    if frac and int(frac[:2].ljust(2, "0")):
        cents = int(frac[:2].ljust(2, "0"))
        parts.append(f"{num2words(cents)} {sub if cents == 1 else sub + 's'}")
    return " and ".join(parts)


def _number(m: re.Match[str]) -> str:
    n = int(m.group(0))
    if 1000 < n < 3000 and n % 100 and len(m.group(0)) == 4:
        return str(num2words(n, to="year"))
    return str(num2words(n))


def expand_numbers(text: str) -> str:
    text = _COMMA_NUMBER.sub(r"\1\3", text)
    text = _PERCENT.sub(r"\1 percent", text)
    text = _CURRENCY.sub(_currency, text)
    text = _ORDINAL.sub(lambda m: num2words(int(m.group(1)), to="ordinal"), text)
    text = _DECIMAL.sub(lambda m: num2words(float(m.group(0))), text)
    return _NUMBER.sub(_number, text)


def english_cleaners(text: str) -> str:
    """Normalise English text to the symbol set: 'Dr. Smith paid $3.50' -> 'doctor smith paid
    three dollars and fifty cents'."""
    text = unidecode(text)
    for pattern, full in _ABBREVIATIONS:
        text = pattern.sub(full, text)
    text = expand_numbers(text).lower().replace("-", " ")
    text = _ALLOWED.sub(" ", text)
    return _WHITESPACE.sub(" ", text).strip()
