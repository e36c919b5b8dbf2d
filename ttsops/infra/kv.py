"""NVIDIA-style ``"k=v,k=v"`` hparams strings: the one formatter and the one parser.

``format_hparams`` writes what ``parse_hparams`` (and so train.py's ``--hparams``) reads back:
sorted keys, floats as ``repr`` (they round-trip exactly), None as ``null``, booleans as
``true``/``false``. A value holding ``,`` or ``=`` cannot be written and is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ttsops.errors import ConfigError


def format_value(key: str, value: Any) -> str:
    """One value as ``parse_hparams`` reads it back (floats round-trip exactly)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    if any(c in text for c in ",="):
        raise ConfigError(f"hparam {key}={text!r}: values cannot contain ',' or '='")
    return text


def format_hparams(hparams: Mapping[str, Any]) -> str:
    """``"k=v,k=v"``, sorted by key."""
    return ",".join(f"{k}={format_value(k, v)}" for k, v in sorted(hparams.items()))


def parse_hparams(spec: str | None) -> dict[str, str]:
    """``"k=v,k=v"`` -> ``{k: "v"}`` (values stay strings: the reader types them)."""
    if not spec or not spec.strip():
        return {}
    out: dict[str, str] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--hparams entry {item!r}: expected key=value")
        out[key.strip()] = value.strip()
    return out
