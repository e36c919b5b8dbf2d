"""Judging a warm-started generation against the line it continues (``optimization.warm_prune_sigmas``).

Hyperband and the median rule compare trials at equal steps of their own. That suits fresh trials;
a warm-started generation is different: it continues the best checkpoint's line with new hparams, so
the question is not "is it among the best third at epoch 2" but "did the new hparams make the line
worse". Measured (benchmarks/README.md, tuner against baselines): once the line plateaus, the
objective moves +-0.3 between consecutive validations on a small validation set while hparams move
it less, and Hyperband pruned 5 warm continuations in a row on that noise, among them the learning
rates that gave plain Optuna its best trials.

The rule, for a trial whose ``REFERENCE_ATTR`` holds the level of the line at the checkpoint it
started from (``line_level``: not the best validation's objective itself, which is the lowest of many
noisy ones, so an equally good continuation would look worse): from step ``min_step`` (the pruner's own warm-up, ``hyperband.min_resource``) on, prune when
its last two objectives, not counting its first (the restart's transient: a fresh Adam state, a new
learning rate), are both worse than the reference by more than ``sigmas`` times the study's
validation noise (at least ``MIN_REL`` of the reference), and its trend does not bring it back: a
least-squares line through its objectives after the first, its slope made one standard error more
pessimistic (the noise over the spread of the steps), projected to the generation's last validation
(``horizon``: Hyperband's ``max_resource``, where the generation's rungs end; without Hyperband as
many steps ahead as it has been judged), must still be past the margin. A continuation still coming
back from its restart, slowly (5.42, 4.88, 4.00 against a line at 3.5 was pruned by the first
version of this rule, which only compared the last two values), runs on. The
noise is the robust spread of the latest consecutive differences of finished trials'
objectives (MAD x 1.4826 / sqrt(2): the spread of one validation; each trial's first value left
out for the same reason), known once there are ``MIN_DIFFS`` differences; until then the
configured pruner judges, as for a fresh trial. Two validations, so one unlucky validation of a
good continuation does not end it (both past 2 sigma by chance: ~0.05%); a continuation that
wrecks the line (a learning rate that breaks the alignment) is past any margin by its third
validation. Fresh trials keep the configured pruner. ``warm_prune_sigmas: null`` judges every trial
by the pruner, as before.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
from optuna.trial import FrozenTrial, TrialState

REFERENCE_ATTR = "ttsops.line_reference"  # the objective of the checkpoint a warm-started trial continues
HEAD_ATTR = "ttsops.line_head"  # study attr: the generation (its checkpoint, its level) the line continues from
LEVEL_PREFIX = "ttsops.line_level."  # study attr + generation number: the head's level after it completed
CARRY_ON_ATTR = "ttsops.carry_on"  # user attr: the head resumed with its own hparams, not judged by value (line_head.py)
MIN_DIFFS = 4
RECENT_DIFFS = 20  # about the last four generations of the demo config
MIN_REL = 0.01  # the margin's floor, of |reference|: a noiseless line (a toy trainer) has noise ~0
WINDOW = 2


def validation_noise(trials: Iterable[FrozenTrial]) -> float | None:
    """The spread of one validation's objective now: from the latest ``RECENT_DIFFS`` differences of
    the finished trials, in trial order (None until ``MIN_DIFFS`` exist). Not all of them: the
    differences while the alignment forms are 10x those of a formed line (measured, 80 clips: over
    all trials 0.33 at generation 7, over the latest 20 0.21), and a margin that wide let a
    continuation ending at 3.39 carry on a line at 2.87 (benchmarks/README.md, eighth run)."""
    diffs: list[float] = []
    for t in sorted(trials, key=lambda f: f.number):
        if t.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            continue
        values = [v for _, v in sorted(t.intermediate_values.items()) if math.isfinite(v)]
        diffs += [b - a for a, b in zip(values[1:], values[2:], strict=False)]
    if len(diffs) < MIN_DIFFS:
        return None
    d = np.asarray(diffs[-RECENT_DIFFS:])
    return float(np.median(np.abs(d - np.median(d))) * 1.4826 / math.sqrt(2))


def line_level(values: Sequence[float], kept: float, before: int = 4, after: int = 2) -> float:
    """The line's level at the validation whose checkpoint a continuation starts from (``kept``: the
    best generation's best validation), robust to that validation being a lucky one.

    The kept value is the minimum of a generation's noisy validations, so a continuation that is
    exactly as good as the line lands above it on average: the demo's line ended at 2.016 after a
    plateau at 2.15-2.20, and 19 continuations in a row (2.13-2.19 each, learning rates from 3e-4
    to 3e-3) were pruned as worse. So the reference is a robust straight line (Theil-Sen: median
    slope of all pairs, median intercept) through the kept validation, up to ``before`` before it
    and ``after`` after it, read at the kept one: a lone dip does not move it, a steady descent is
    followed to its end. Fewer than 3 values: ``kept`` itself."""
    finite = [float(v) for v in values if math.isfinite(v)]
    if not finite:
        return kept
    i = min(range(len(finite)), key=lambda k: abs(finite[k] - kept))
    return level_at(finite, i, before, after, default=kept)


def end_level(values: Sequence[float], before: int = 4) -> float | None:
    """The line's level at a generation's last validation (where its newest checkpoint is): the
    same robust line as ``line_level``, through the last ``before`` + 1 values. None without values."""
    finite = [float(v) for v in values if math.isfinite(v)]
    return level_at(finite, len(finite) - 1, before, 0, default=finite[-1]) if finite else None


def level_at(finite: Sequence[float], i: int, before: int, after: int, *, default: float) -> float:
    """Theil-Sen line through ``finite[i - before : i + after + 1]`` read at ``i`` (``default`` with fewer
    than 3), kept within those values: a generation coming down a hump (8.12, 4.71, 3.65, 3.50, 3.85)
    read 2.66 at its end, below every value it had, and its continuation was judged against that."""
    lo, hi = max(0, i - before), min(len(finite), i + after + 1)
    y = np.asarray(finite[lo:hi], dtype=float)
    if len(y) < 3:
        return default
    x = np.arange(lo, hi, dtype=float)
    a, b = np.triu_indices(len(y), k=1)
    slope = float(np.median((y[b] - y[a]) / (x[b] - x[a])))
    return float(np.clip(np.median(y + slope * (i - x)), y.min(), y.max()))


def continuation_verdict(
    values: Sequence[float], last_step: int, reference: float, noise: float, *,
    sigmas: float, min_step: int, maximize: bool = False, horizon: int | None = None,
) -> str | None:
    """Why the continuation should be pruned (None: let it run). ``values``: its reported
    objectives in step order, the last one at ``last_step``; ``horizon``: the generation's last step."""
    judged = list(values[1:])  # the first validation after a restart is its transient
    if last_step < min_step or len(judged) < WINDOW:
        return None
    margin = max(sigmas * noise, MIN_REL * abs(reference))
    sign = -1.0 if maximize else 1.0
    tail = judged[-WINDOW:]
    if not all(sign * (v - reference) > margin for v in tail):
        return None
    ahead = len(judged) if horizon is None else max(0, horizon - last_step)
    projected = projection(judged, noise, ahead, sign)
    if sign * (projected - reference) <= margin:  # its trend brings it back by the generation's end
        return None
    shown = ", ".join(f"{v:.4g}" for v in tail)
    return (f"worse than the line it continues: last {WINDOW} objectives {shown} against {reference:.4g} "
            f"(+ margin {margin:.3g} = {sigmas:g} x validation noise {noise:.3g}), "
            f"trend {projected:.4g} in {ahead} validations")


def keeps_the_line(level: float, reference: float, noise: float, *, sigmas: float, maximize: bool = False) -> bool:
    """Whether a completed continuation carries the line on: its ``level`` (``end_level`` at its
    newest checkpoint, or ``line_level`` at its kept one) is no worse than ``reference`` by more than
    the warm-line margin (``sigmas`` x ``noise``, at least ``MIN_REL``).

    Without it the next continuation starts from the best checkpoint again, and the best is the
    lowest of many noisy validations: measured on 80 clips, after a lucky 3.04 every one of six
    continuations (levels 3.2-3.5, each 24-42 steps further on) lost its steps, the line stayed at
    the same step for the rest of the budget while one continuous run went on from 3.4 to 2.8. So a
    continuation that is as good as the line within the noise becomes the line's head (the tuner's
    ``HEAD_ATTR``), as population-based training keeps a member that is not clearly worse."""
    margin = max(sigmas * noise, MIN_REL * abs(reference))
    sign = -1.0 if maximize else 1.0
    return sign * (level - reference) <= margin


def projection(values: Sequence[float], noise: float, ahead: int, sign: float = 1.0) -> float:
    """Where a least-squares line through ``values`` (one per step) is ``ahead`` steps after the last,
    its slope one standard error (``noise`` / sqrt(Sxx)) worse in the direction ``sign`` (+1: higher is
    worse)."""
    x = np.arange(len(values), dtype=float)
    y = np.asarray(values, dtype=float)
    sxx = float(((x - x.mean()) ** 2).sum())
    slope = float(((x - x.mean()) * (y - y.mean())).sum() / sxx)
    fitted_last = float(y.mean() + slope * (x[-1] - x.mean()))
    return fitted_last + (slope + sign * noise / math.sqrt(sxx)) * ahead
