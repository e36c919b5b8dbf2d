"""The config's ``search_space`` in Ray's terms: a define-by-run function for ``OptunaSearch``
(the Optuna engine's own ``suggest``, so both engines sample the same space) and Ray domains for
Population Based Training, whose explore step is kept inside the bounds (Ray's x1.2 / x0.8
perturbation does not clip)."""

from __future__ import annotations

import math
from typing import Any

from ttsops.config import ParamSpec
from ttsops.smart_tuner.search.opt_engine import suggest


class DefineByRun:
    """``OptunaSearch(space=...)``: every parameter drawn by ``suggest`` from an Optuna trial
    (a class, not a closure: Ray pickles its searcher into the experiment state)."""

    def __init__(self, space: dict[str, ParamSpec]) -> None:
        self.space = dict(space)

    def __call__(self, trial: Any) -> None:
        for name, spec in self.space.items():
            suggest(trial, name, spec)


def tune_domains(space: dict[str, ParamSpec]) -> dict[str, Any]:
    """Ray ``tune`` domains with the same ranges (PBT's ``param_space`` and its mutations)."""
    from ray import tune

    out: dict[str, Any] = {}
    for name, s in space.items():
        if s.type == "choice":
            out[name] = tune.choice(list(s.choices or []))
            continue
        low, high = float(s.low or 0.0), float(s.high or 0.0)  # validated: both set for numbers
        if s.type == "int":
            out[name] = tune.qrandint(int(low), int(high), int(s.step or 1))
        elif s.type == "loguniform":
            out[name] = tune.loguniform(low, high)
        elif s.step:
            out[name] = tune.quniform(low, high, float(s.step))
        else:
            out[name] = tune.uniform(low, high)
    return out


class ClipToSpace:
    """PBT's ``custom_explore_fn``: a perturbed value back inside its bounds and on its grid."""

    def __init__(self, space: dict[str, ParamSpec]) -> None:
        self.space = dict(space)

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        for name, s in self.space.items():
            if name not in config or s.type == "choice":
                continue
            low, high = float(s.low or 0.0), float(s.high or 0.0)
            v = float(config[name])
            v = min(max(v, low), high) if math.isfinite(v) else low
            if s.step:
                v = min(low + round((v - low) / float(s.step)) * float(s.step), high)
            config[name] = int(round(v)) if s.type == "int" else v
        return config
