"""What the sampler learns from: what a continuation did to the line, not how old the line was.

A warm-started generation's objective is mostly the age of the line it continues: on 80 clips the
line falls from 5.5 to 2.3 over a 10-CPU-minute study while a change of hparams moves one
generation by 0.05-0.5 (benchmarks/README.md, eighth run). TPE splits the trials it has seen into
good and bad by value, so its "good" trials were the latest ones, whatever their hparams, and it
proposed near whatever was sampled last.

With ``optimization.sampler_value: line_effect`` (the default) the tuner asks a **shadow study**
for the next generation's params: an in-memory Optuna study with the configured sampler (seeded by
the study's seed + its number of trials, so a resumed study proposes the same), holding every
finished continuation of the line with its **line effect** as value, and queues them
(``study.enqueue_trial``, trial attr ``PROPOSED_ATTR``). The line effect of a completed
continuation is its level at its end (``warm_line.end_level``, where its newest checkpoint is)
minus the level of the line it started from (``REFERENCE_ATTR``); of a pruned one, its last
objective minus that level (what the rule pruned it for). Fresh trials have no line and are left
out. Until two effects exist, and for ``cma_es`` (it keeps its own generations in system attrs an
added trial lacks) and ``random``, the study's own sampler proposes. The
study's values, its best trial, the pruner and the champion are untouched: only what the sampler
learns from changes. ``objective``: the sampler sees the objectives, as before.
"""

from __future__ import annotations

import math
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState, create_trial

from ttsops.config import OptimizationConfig, ParamSpec
from ttsops.smart_tuner.search.opt_engine import suggest
from ttsops.smart_tuner.search.samplers import SAMPLERS
from ttsops.smart_tuner.search.warm_line import REFERENCE_ATTR, end_level

PROPOSED_ATTR = "ttsops.proposed_by_line_effect"  # user attr: params from the shadow study
MIN_EFFECTS = 2
TPE_SAMPLERS = ("tpe", "bohb")  # CMA-ES keeps its own generations in trial attrs a shadow cannot give it


def line_effect(t: FrozenTrial) -> float | None:
    """What ``t`` did to the line it continued (None: a fresh trial, or nothing reported)."""
    reference = t.user_attrs.get(REFERENCE_ATTR)
    values = [v for _, v in sorted(t.intermediate_values.items()) if math.isfinite(v)]
    if reference is None or not values or t.state not in (TrialState.COMPLETE, TrialState.PRUNED):
        return None
    reached = end_level(values) if t.state == TrialState.COMPLETE else values[-1]
    return None if reached is None else float(reached) - float(reference)


def shadow_study(trials: list[FrozenTrial], sampler: optuna.samplers.BaseSampler,
                 direction: StudyDirection) -> optuna.Study:
    """An in-memory study of ``trials``' params with their line effects as values."""
    shadow = optuna.create_study(direction=direction, sampler=sampler)
    for t in trials:
        effect = line_effect(t)
        if effect is not None and t.params:
            dists: dict[str, BaseDistribution] = dict(t.distributions)
            shadow.add_trial(create_trial(params=dict(t.params), distributions=dists, value=effect))
    return shadow


def propose(study: optuna.Study, cfg: OptimizationConfig, space: dict[str, ParamSpec]) -> dict[str, Any] | None:
    """The next generation's params from the shadow study (None: the study's sampler decides)."""
    if cfg.sampler_value != "line_effect" or str(cfg.sampler) not in TPE_SAMPLERS:
        return None
    everything = study.get_trials(deepcopy=False)  # one read of the storage per proposal
    trials = [t for t in everything if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    seeded = cfg.model_copy(update={"seed": (cfg.seed or 0) + len(everything)})
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "a new study created in memory" per generation
    try:
        shadow = shadow_study(trials, SAMPLERS[str(cfg.sampler)](seeded, space), study.direction)
        if len(shadow.trials) < MIN_EFFECTS:
            return None
        trial = shadow.ask()
        return {name: suggest(trial, name, spec) for name, spec in space.items()}
    finally:
        optuna.logging.set_verbosity(verbosity)


def queue_proposal(study: optuna.Study, cfg: OptimizationConfig, space: dict[str, ParamSpec]) -> dict[str, Any] | None:
    """Queue the shadow study's proposal as the next trial, unless a trial already waits (the
    baseline, a carry-on, a re-queued one). Returns the params queued."""
    if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        return None
    params = propose(study, cfg, space)
    if params is not None:
        study.enqueue_trial(params, user_attrs={PROPOSED_ATTR: True}, skip_if_exists=False)
    return params
