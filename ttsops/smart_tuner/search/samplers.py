"""The config's Optuna samplers and pruners, built by name (``SAMPLERS``, ``PRUNERS``).

Samplers (``SAMPLERS``): ``tpe`` (TPESampler with ``n_startup_trials`` and
``consider_magic_clip``), ``cma_es`` (CmaEsSampler; ``choice`` params cannot be modelled by CMA-ES
and are sampled by an independent TPE: said once in the log), ``bohb`` (TPESampler + the hyperband
pruner, whatever ``optimization.pruner`` says: Optuna's recipe for BOHB, which Optuna documents as
``TPESampler`` with ``HyperbandPruner`` rather than a sampler of its own; it is not the original BOHB's
per-budget KDE, since Optuna's Hyperband gives each bracket its own TPE over that bracket's trials),
``random``.

Pruners (``PRUNERS``): ``hyperband`` (min/max_resource, reduction_factor, and a bracket count that
fits the budget, see ``default_n_brackets``), ``median`` (warm-up = ``hyperband.min_resource``),
``none``.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from typing import Any

from optuna.pruners import BasePruner, HyperbandPruner, MedianPruner, NopPruner
from optuna.samplers import BaseSampler, CmaEsSampler, RandomSampler, TPESampler

from ttsops.config import OptimizationConfig, ParamSpec
from ttsops.errors import ConfigError

logger = logging.getLogger(__name__)


# --- samplers ----------------------------------------------------------------------------------
def _tpe(cfg: OptimizationConfig, space: dict[str, ParamSpec]) -> BaseSampler:
    kwargs: dict[str, Any] = {"n_startup_trials": cfg.tpe.n_startup_trials, "seed": cfg.seed}
    if not cfg.tpe.consider_magic_clip:
        # Optuna 5 deprecates the argument (True is its default and stays so); pass it only
        # when the config turns the clip off, and do not let the deprecation notice escape.
        kwargs["consider_magic_clip"] = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return TPESampler(**kwargs)


def _cma_es(cfg: OptimizationConfig, space: dict[str, ParamSpec]) -> BaseSampler:
    categorical = sorted(n for n, s in space.items() if s.type == "choice")
    if categorical:
        logger.warning(
            "cma_es cannot model categorical params %s: they are sampled independently by TPE "
            "(CMA-ES models the numeric ones)",
            ", ".join(categorical),
        )
    return CmaEsSampler(
        seed=cfg.seed,
        independent_sampler=_tpe(cfg, space),
        warn_independent_sampling=False,
    )


def _random(cfg: OptimizationConfig, space: dict[str, ParamSpec]) -> BaseSampler:
    return RandomSampler(seed=cfg.seed)


SAMPLERS: dict[str, Callable[[OptimizationConfig, dict[str, ParamSpec]], BaseSampler]] = {
    "tpe": _tpe,
    "cma_es": _cma_es,
    "bohb": _tpe,  # BOHB = TPE + Hyperband: the engine forces the hyperband pruner for it
    "random": _random,
}


# --- pruners -----------------------------------------------------------------------------------
def natural_n_brackets(min_resource: int, max_resource: int, reduction_factor: int) -> int:
    """Optuna's own count: ``floor(log_eta(max/min)) + 1`` (4 for (1, 80, 3))."""
    return math.floor(math.log(max_resource / min_resource, reduction_factor)) + 1


def default_n_brackets(
    n_trials: int | None,
    n_startup_trials: int,
    min_resource: int,
    max_resource: int,
    reduction_factor: int,
) -> int:
    """Brackets that fit the trial budget: each should see ``2 * n_startup_trials`` trials.

    Every bracket samples from its own trials only, so ``b`` brackets cost ``b * n_startup_trials``
    random trials before the sampler models anything. Rule: ``min(natural,
    max(1, n_trials // (2 * max(1, n_startup_trials))))``; with no known budget, the natural count.

    | n_trials | n_startup_trials | (min, max, eta) | natural | default |
    |---|---|---|---|---|
    | 100 | 15 | (1, 80, 3) | 4 | 3 |
    | 30 | 15 | (1, 80, 3) | 4 | 1 |
    | 12 | 2 | (1, 8, 2) | 4 | 3 |
    | None | 15 | (1, 80, 3) | 4 | 4 |
    """
    natural = natural_n_brackets(min_resource, max_resource, reduction_factor)
    if n_trials is None:
        return natural
    return min(natural, max(1, n_trials // (2 * max(1, n_startup_trials))))


class BracketedHyperbandPruner(HyperbandPruner):
    """HyperbandPruner with an explicit bracket count (Optuna derives it and offers no argument).

    Bracket ``i`` is successive halving with ``min_early_stopping_rate=i``; fewer brackets keep the
    most aggressive ones (bracket 0 first reaches a rung at ``min_resource``). One bracket is plain
    successive halving. Brackets are laid out at construction, so trials are assigned to their
    bracket from the first ``ask`` (Optuna otherwise puts every trial in bracket 0 until the first
    pruning call).
    """

    def __init__(self, min_resource: int, max_resource: int, reduction_factor: int, n_brackets: int) -> None:
        natural = natural_n_brackets(min_resource, max_resource, reduction_factor)
        if not 1 <= n_brackets <= natural:
            raise ConfigError(
                f"n_brackets={n_brackets}: must be 1..{natural} for hyperband "
                f"(min_resource={min_resource}, max_resource={max_resource}, eta={reduction_factor})"
            )
        super().__init__(
            min_resource=min_resource, max_resource=max_resource, reduction_factor=reduction_factor
        )
        self._n_brackets = n_brackets  # read by HyperbandPruner._try_initialization
        self._try_initialization(None)  # type: ignore[arg-type]  # study is only used for "auto"

    @property
    def n_brackets(self) -> int:
        return len(self._pruners)


def _hyperband(cfg: OptimizationConfig, n_brackets: int) -> BasePruner:
    hb = cfg.hyperband
    return BracketedHyperbandPruner(hb.min_resource, hb.max_resource, hb.reduction_factor, n_brackets)


def _median(cfg: OptimizationConfig, n_brackets: int) -> BasePruner:
    return MedianPruner(n_startup_trials=5, n_warmup_steps=cfg.hyperband.min_resource)


def _none(cfg: OptimizationConfig, n_brackets: int) -> BasePruner:
    return NopPruner()


PRUNERS: dict[str, Callable[[OptimizationConfig, int], BasePruner]] = {
    "hyperband": _hyperband,
    "median": _median,
    "none": _none,
}
