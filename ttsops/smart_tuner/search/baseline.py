"""The study's first trial: the config's own hparams (``optimization.enqueue_baseline``).

A user's config is a known point and usually a good one (the demo's hparams reach plain Optuna's
best in ~0.4x its CPU, benchmarks/README.md), while TPE's start-up trials are random. So a new study
runs the config first: for each searched key, its value in ``training.hparams``, else the trainer's
own default (``TrainerAdapter.default``; a foreign trainer has none). A key with no value there, or
a value outside the search space (outside ``[low, high]``, not whole for ``int``, not among
``choices``; a ``null`` choice is taken from ``training.hparams`` only, since a trainer's ``None``
default means "none known"), is left to the sampler and named in the log. The baseline is enqueued once, into a
study with no trials (``skip_if_exists`` as well, for two workers opening a new study together);
a resumed study enqueues nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from ttsops.config import ParamSpec

BASELINE_ATTR = "ttsops.baseline"  # user attr of the enqueued trial


def baseline_params(
    space: Mapping[str, ParamSpec], hparams: Mapping[str, Any], default: Callable[[str], Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    """``(params, left)``: the baseline's value per searched key, and why each other key is left
    to the sampler."""
    params: dict[str, Any] = {}
    left: dict[str, str] = {}
    for name, spec in space.items():
        value = hparams[name] if name in hparams else default(name)
        # a trainer's None means "no default known"; only the config can choose a None choice
        why = "no value in training.hparams or the trainer's defaults" if value is None and name not in hparams \
            else _outside(spec, value)
        if why:
            left[name] = why
        else:
            params[name] = value
    return params, left


def _outside(spec: ParamSpec, value: Any) -> str:
    """Why ``value`` cannot be a point of ``spec`` ('' when it can)."""
    if spec.type == "choice":
        same = any(value is c if value is None or c is None else value == c for c in spec.choices or [])
        return "" if same else f"{value!r} is not among {spec.choices}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "no value in training.hparams or the trainer's defaults" if value is None else f"{value!r} is not a number"
    if not float(spec.low or 0) <= value <= float(spec.high or 0):  # low/high are set for numeric types
        return f"{value} is outside [{spec.low}, {spec.high}]"
    if spec.type == "int" and value != int(value):
        return f"{value} is not whole"
    return ""
