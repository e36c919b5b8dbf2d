"""Attention health: has the alignment formed, is it holding, is it monotonic?

Input: ``attention_alignment_score`` per validation (diagonality in [0, 1]; the alignment has
*formed* once its robust peak, :func:`running_peak`, the highest median of 3 consecutive scores,
reaches ``alignment_threshold``, 0.8 by default: one lucky validation does not count), optionally
``attention_entropy`` and, when the trainer logs it, ``attention_monotonicity`` (share of decoder
steps whose attention peak moves forward).

Verdicts:

- ``not_yet_aligned`` (abstains, and the controller blocks plateau stops meanwhile: a Tacotron
  loss often flattens *before* the alignment snaps into place);
- ``never_aligned`` (prune): past the alignment deadline (the end of the ``warmup`` curriculum stage
  by default: attention must form while the model is warming up) the score is still below the
  threshold and its Sen's slope, even at the favourable end of its CI, would not reach the threshold
  within ``progress_patience`` validations; a run that is visibly climbing (projected to get there
  in time, or rising significantly by Mann-Kendall) gets that long past the deadline, no more, and
  only while it is still forming: its robust peak rose within the last ``window`` validations (a
  run climbing back towards a level it had and lost is not forming, it is failing). A run that is
  *still learning* gets the same grace, climbing or not: its robust peak once reached the marginal
  band (``threshold - collapse_margin``) and its loss (``objective``) made a new best by more than
  ``min_delta`` within the last ``improving_window`` validations;
- a *marginal* alignment is neither: past the deadline, a run whose last ``HOLD_WINDOW`` scores
  hold within ``collapse_margin`` of the threshold (0.65-0.8 by default) has formed an alignment
  that is not yet sharp. It is not pruned, and (as ``not_yet_aligned``) not stopped for a plateau.
  Our tiny recorded model holds 0.72-0.78 for 100 epochs while its loss drops again from 7.2 to 5.3;
  a model that really settles below the threshold needs a lower ``alignment_threshold``;
- ``never_aligned`` also before the deadline when the attention is flat: the last
  ``flatline_validations`` (8) scores are all below ``flatline_score`` (0.1, where uniform, stuck and
  random attention score) and not rising significantly. With the alignment prior our recorded
  healthy runs are above 0.1 within 4 validations; runs without it sat at 0.00 for 40 epochs;
- ``alignment_collapsed`` (prune): the alignment formed, and the last ``consecutive`` validations
  are below the marginal band (``threshold - collapse_margin``, 0.65) and more than
  ``collapse_margin`` below the robust peak (a wobble around 0.8 is not a collapse; with the raw
  maximum as the peak, one lucky 0.81 in a run holding 0.73-0.78 made the next ordinary 0.70 a
  "collapse" in a recorded run that went on to its best loss). A sag into the marginal band is
  ``alignment_settling``, as a marginal alignment is never a failure: a held-out demo-size run
  peaked at 0.93, sagged to 0.77 for two validations while its loss reached a new best, and was
  pruned as collapsed when the line was the threshold (it improved 30% more). A *barely formed*
  alignment, one whose robust peak is under ``threshold + firm_margin`` (0.85), has to stay below
  the band for ``barely_formed_consecutive`` (10) validations instead: two held-out tiny runs
  touched 0.80-0.81, fell to 0.57-0.66 for 5-7 validations and came back to 0.85 and their best
  loss, while every real collapse on our curves fell from a robust peak of 0.87-0.95. A warm start
  ``inherited`` an alignment held at the threshold counts as formed before its first validation, so
  losing it is a collapse from the start (demo-size warm starts at lr 0.05-1.0 from a checkpoint
  holding 0.88 fell to 0.00-0.09 at once; before, nothing had formed in *this* run and nothing pruned
  them before the deadline);
- ``alignment_settling`` (abstains, and the controller blocks plateau stops meanwhile): the
  alignment formed but the median of its last ``HOLD_WINDOW`` (5) validations since then is below
  the threshold now, without having collapsed. On our recorded train.py runs the loss plateaus while
  the alignment holds at 0.7-0.8 and drops again (7.2 -> 5.1) once it firms up to 0.9: a plateau in
  this state is not convergence;
- ``aligned`` (abstains; ``held_since`` says from which validation it holds, so the controller can
  give the loss time to respond after a formation or a re-firming).

Monotonicity: health = smoothed score - ``monotonic_penalty`` x non-monotonicity, where
non-monotonicity is ``1 - attention_monotonicity`` when logged, else the share of the score's
recent movement that went downwards (a healthy alignment climbs, then holds). Health is reported
and drives the never-aligned judgement; collapse is judged on the raw score so it is caught within
``consecutive`` validations. NaN/inf scores are dropped; no finite score at all -> abstain.

Caveat: the alignment score of teacher-forced validation can look fine while free-running
inference still fails; it is the earliest cheap signal, not the last word.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ttsops.smart_tuner.early_stop.detectors import (
    DetectorResult,
    Reason,
    abstain,
    as_array,
    finite_points,
    min_delta_abs,
    result,
    smooth,
)
from ttsops.smart_tuner.early_stop.stats import cusum_changepoint, mann_kendall


def _nonmonotonicity(a: np.ndarray, monotonicity: np.ndarray, window: int) -> float:
    m = monotonicity[np.isfinite(monotonicity)]
    if m.size:
        return float(min(1.0, max(0.0, 1.0 - m[-1])))
    d = np.diff(a[-window:])
    total = float(np.sum(np.abs(d)))
    return float(np.sum(np.clip(-d, 0, None)) / total) if total > 0 else 0.0


def attention_detector(
    alignment: Sequence[float] | np.ndarray | None, *, threshold: float = 0.8,
    monotonic_penalty: float = 0.1, epochs: Sequence[float] | np.ndarray | None = None,
    deadline_epoch: float = 20.0, progress_patience: int = 15, collapse_margin: float = 0.15,
    consecutive: int = 2, firm_margin: float = 0.05, barely_formed_consecutive: int = 10,
    entropy: Sequence[float] | np.ndarray | None = None,
    monotonicity: Sequence[float] | np.ndarray | None = None, window: int = 10, alpha: float = 0.3,
    flatline_score: float = 0.1, flatline_validations: int = 8,
    objective: Sequence[float] | np.ndarray | None = None, improving_window: int | None = 10,
    min_delta: float = 0.005, vote_span: float = 0.05, vote_max: float = 0.7, inherited: float | None = None,
) -> DetectorResult:
    """Judge the alignment curve; see the module docstring for the verdicts. ``inherited``: where the
    alignment held in the checkpoint this run warm-started from (None: a fresh run, or unknown)."""
    name = "attention"
    raw = as_array(alignment)
    idx, a = finite_points(raw)
    if a.size == 0:
        return abstain(name, Reason.MISSING_METRIC, "attention_alignment_score not logged")
    ep = as_array(epochs)
    epoch = float(ep[-1]) if ep.size and math.isfinite(ep[-1]) else float(raw.size)
    s = smooth(a, alpha)
    nonmono = _nonmonotonicity(a, as_array(monotonicity), window)
    health = float(s[-1] - monotonic_penalty * nonmono)
    ent = as_array(entropy)
    info: dict[str, Any] = dict(
        current=float(a[-1]), smoothed=float(s[-1]), health=health, peak=float(a.max()),
        nonmonotonicity=nonmono, epoch=epoch, threshold=threshold,
        entropy=float(ent[-1]) if ent.size and math.isfinite(ent[-1]) else None,
    )
    robust = running_peak(a)
    info["robust_peak"] = float(robust[-1]) if math.isfinite(robust[-1]) else None
    # reached on the robust peak: one lucky validation over the threshold is not an alignment
    reached = np.flatnonzero(robust >= threshold)
    carried = inherited is not None and math.isfinite(inherited) and inherited >= threshold
    if carried and inherited is not None:  # formed before this run's first validation: every score counts
        info.update(inherited_alignment=inherited, robust_peak=max(float(np.nan_to_num(robust[-1], nan=0.0)), inherited))
    if reached.size or carried:
        first = 0 if carried else int(reached[0])
        info["aligned_at"] = -1 if carried else int(idx[first])
        firm = float(info["robust_peak"]) >= threshold + firm_margin
        info.update(firm=firm, firm_peak=threshold + firm_margin, vote_span=vote_span, vote_max=vote_max)
        return _after_alignment(name, a, idx, first, threshold, collapse_margin, consecutive,
                                barely_formed_consecutive, info)
    flat = _flatline(name, a, idx, flatline_score, flatline_validations, info)
    if flat is not None:
        return flat
    learning = improving_window is not None and still_improving(objective, improving_window, min_delta)
    info["objective_improving"] = learning
    return _before_alignment(name, a, idx, robust, epoch, ep, health, threshold, deadline_epoch,
                             progress_patience, window, collapse_margin, learning, info)


def _flatline(name: str, a: np.ndarray, idx: np.ndarray, level: float, k: int,
              info: dict[str, Any]) -> DetectorResult | None:
    """The attention learned nothing at all: the last ``k`` scores all below ``level`` and not
    rising significantly. Judged before the deadline (a dead run need not wait for it)."""
    if k < 3 or a.size < k or not np.all(a[-k:] < level):
        return None
    mk = mann_kendall(a[-k:], idx[-k:].astype(float))
    if mk.p_increasing < 0.05 and mk.slope > 0:
        return None
    info.update(flatline_level=level, flatline_validations=k)
    return result(name, 1.0, Reason.NEVER_ALIGNED,
                  f"never aligned: attention flat, score below {level:.2f} for the last {k} validations "
                  f"(max {float(a[-k:].max()):.2f}) and not rising", prune=True, **info)


HOLD_WINDOW = 5  # validations whose median says where the alignment holds


def lower_median(values: Sequence[float] | np.ndarray) -> float:
    """The lower of the two middle values for an even count (never an average of two scores)."""
    ordered = sorted(float(v) for v in values)
    return ordered[(len(ordered) - 1) // 2]


def held_alignment(alignment: Sequence[float] | np.ndarray) -> float | None:
    """Where the alignment holds: the lower median of the last ``HOLD_WINDOW`` finite scores
    (None without any). What the study level judges a generation by, like the in-trial rules: one
    unlucky last validation does not make an aligned generation unaligned."""
    _, a = finite_points(as_array(alignment))
    return lower_median(a[-HOLD_WINDOW:]) if a.size else None


def running_peak(alignment: Sequence[float] | np.ndarray) -> np.ndarray:
    """Causal robust peak per validation: the running max of the median of the last 3 finite
    scores (with two scores, the lower one). NaN until two finite scores have been seen. The
    reference for "reached the threshold" and "collapsed" here, and for the replay harness's
    failure onset and usable-checkpoint rule."""
    raw = as_array(alignment)
    out = np.full(raw.shape, np.nan)
    recent: list[float] = []
    peak = -math.inf
    for i, v in enumerate(raw):
        if math.isfinite(v):
            recent = (recent + [float(v)])[-3:]
            if len(recent) >= 2:
                peak = max(peak, lower_median(recent))
        out[i] = peak if math.isfinite(peak) else math.nan
    return out


def held_since(a: np.ndarray, first: int, threshold: float) -> int:
    """Index (into ``a``) from which the alignment has held: the last point where the median of
    the last ``HOLD_WINDOW`` scores since ``first`` came back to >= ``threshold`` (``first`` if it
    never dipped)."""
    since = first
    below = False
    for i in range(first, a.size):
        ok = lower_median(a[first : i + 1][-HOLD_WINDOW:]) >= threshold
        if ok and below:
            since = i
        below = not ok
    return since


def _after_alignment(
    name: str, a: np.ndarray, idx: np.ndarray, first: int, threshold: float, margin: float,
    consecutive: int, barely_consecutive: int, info: dict[str, Any],
) -> DetectorResult:
    """Validations below the band in a row that make a collapse: ``consecutive`` for a firm
    alignment, ``barely_consecutive`` for a barely-formed one (``info["firm"]`` False)."""
    peak = float(info["robust_peak"])  # set by the caller; finite once reached
    # below the band since the alignment formed: after ``first``, or from the first score for one inherited
    below = a[first + (0 if "inherited_alignment" in info else 1) :] < threshold - margin
    # validations below the band in a row, up to now; the robust peak is >= the threshold here, so
    # below the band is also more than the margin below the peak
    run = int(below.size - np.flatnonzero(~below)[-1] - 1) if (~below).any() else int(below.size)
    barely = "" if info["firm"] else f"barely formed (robust peak {peak:.2f}): "
    carried = " with the warm start's alignment" if "inherited_alignment" in info else ""
    needed = consecutive if info["firm"] else barely_consecutive
    if run >= needed:
        onset, strength = cusum_changepoint(a[first:])
        info.update(collapse_onset=int(idx[first + onset]), shift_strength=strength)
        return result(name, 1.0, Reason.ALIGNMENT_COLLAPSED,
                      f"alignment collapsed: {barely}{a[-1]:.2f} (peak {peak:.2f}{carried}, threshold {threshold:.2f}) "
                      f"for {run} validations, drop began near validation {int(idx[first + onset]) + 1}",
                      prune=True, **info)
    holding = lower_median(a[first:][-HOLD_WINDOW:])  # since alignment: no lag from the climb
    info["holding"] = holding
    info["held_since"] = int(idx[held_since(a, first, threshold)])
    if barely and run >= consecutive:  # would be a collapse were the alignment firm
        return abstain(name, Reason.ALIGNMENT_SETTLING,
                       f"{barely}below {threshold - margin:.2f} for {run} validations ({a[-1]:.2f}); a barely-formed "
                       f"alignment (robust peak < {info['firm_peak']:.2f}) collapses after {needed}", **info)
    if holding < threshold:
        return abstain(name, Reason.ALIGNMENT_SETTLING,
                       f"aligned {_formed(idx, first, info)} but holding below the threshold: "
                       f"median of the last {min(HOLD_WINDOW, a.size - first)} scores {holding:.2f} < "
                       f"{threshold:.2f} (robust peak {peak:.2f})", **info)
    return aligned_vote(name, a, idx, first, threshold, holding, info)


def aligned_vote(name: str, a: np.ndarray, idx: np.ndarray, first: int, threshold: float, holding: float,
                 info: dict[str, Any]) -> DetectorResult:
    """The attention group's vote once the alignment holds: how *settled* it is, times ``vote_max``
    (the controller's stop threshold). ``firmness`` = (holding - threshold) / ``vote_span``, clipped to
    [0, 1]: an alignment holding at the threshold votes 0 (keep going: on our recorded runs the loss
    drops again once a marginal alignment firms up, 7.2 -> 5.1 as it went from 0.8 to 0.9), one
    holding ``vote_span`` (0.05, the firm margin) above it votes ``vote_max``. Halved while the
    alignment still rises significantly (Mann-Kendall over the last ``VOTE_WINDOW`` scores since it
    formed). Capped at the stop threshold, the group can hold a stop back but never carry one the
    loss detectors do not ask for: votes up to 1 raised the replay harness's false stops from 10.6%
    to 15.3%. A vote, never a stop on its own (``ends=False``)."""
    span, vote_max = float(info["vote_span"]), float(info["vote_max"])
    firmness = min(1.0, max(0.0, (holding - threshold) / span)) if span > 0 else 1.0
    tail = a[first:][-VOTE_WINDOW:]
    rising = False
    if tail.size >= 6:
        mk = mann_kendall(tail, idx[first:][-VOTE_WINDOW:].astype(float))
        rising = mk.p_increasing < 0.05 and mk.slope > 0
    score = vote_max * firmness * (0.5 if rising else 1.0)
    info.update(firmness=firmness, sharpening=rising)
    return result(name, score, Reason.ALIGNED,
                  f"aligned {_formed(idx, first, info)}: holding {holding:.2f} (settled {firmness:.0%} of "
                  f"{span:.2f} above {threshold:.2f}{', still sharpening' if rising else ''}), score {a[-1]:.2f}, "
                  f"health {info['health']:.2f}", ends=False, **info)


def _formed(idx: np.ndarray, first: int, info: dict[str, Any]) -> str:
    """When the alignment formed, for messages: at a validation of this run, or in its warm start's source."""
    inherited = info.get("inherited_alignment")
    return f"since validation {int(idx[first]) + 1}" if inherited is None else f"from the warm start ({inherited:.2f})"


VOTE_WINDOW = 10  # scores since the alignment formed that say whether it is still sharpening


def still_improving(objective: Sequence[float] | np.ndarray | None, window: int, min_delta: float) -> bool:
    """The objective (lower is better) made a new best within the last ``window`` validations: the
    best of them is more than ``min_delta`` (relative) below the best before them. False without
    ``window`` finite points before the last ``window`` to compare with (so it needs 2 x ``window``
    validations: at the epoch-20 deadline, one validation per epoch)."""
    if window < 1:
        raise ValueError(f"still_improving: window must be >= 1, got {window}")
    y = as_array(objective)
    recent, before = y[-window:], y[:-window]
    recent, before = recent[np.isfinite(recent)], before[np.isfinite(before)]
    if recent.size == 0 or before.size < window:
        return False
    best = float(before.min())
    return float(recent.min()) < best - min_delta_abs(best, min_delta)


def _before_alignment(
    name: str, a: np.ndarray, idx: np.ndarray, robust: np.ndarray, epoch: float, ep: np.ndarray, health: float,
    threshold: float, deadline: float, patience: int, window: int, margin: float, learning: bool,
    info: dict[str, Any],
) -> DetectorResult:
    info["deadline_epoch"] = deadline
    early = _not_due(name, a, epoch, threshold, deadline, margin, info)
    if early is not None:
        return early
    tail_i, tail = idx[-window:].astype(float), a[-window:]
    mk = mann_kendall(tail, tail_i) if tail.size >= 3 else None
    rate = mk.slope_high if mk is not None else 0.0  # favourable end: the fastest plausible climb
    gap = threshold - health
    needed = gap / rate if rate > 0 else math.inf
    info.update(climb_per_validation=rate, validations_needed=needed if math.isfinite(needed) else None)
    validations_past = _validations_past_deadline(ep, deadline, int(idx[-1]) + 1)
    # visibly climbing: a significant Mann-Kendall rise, whatever the projection says (a recorded run
    # with 3 updates per epoch was at 0.49 at the deadline, projected 16 validations short, and
    # aligned 10 validations later)
    climbing = mk is not None and mk.p_increasing < 0.05 and mk.slope > 0
    # ... but only a run still forming its alignment: one recovering towards a level it reached
    # before and lost (a recorded bs-4 run peaked at 0.73 early, then wandered 0.5-0.7 for 20
    # epochs while its loss rose 35%) is not climbing, it is failing
    age = _peak_age(robust)
    info["robust_peak_age"] = age
    forming = age < window
    # ... unless it is still learning: a run that held a marginal alignment once (robust peak in the
    # band) and whose loss still makes new bests gets the grace too, climbing or not (two held-out
    # tiny runs fell from 0.74-0.77 to 0.4-0.66 by the deadline while their loss kept improving, and
    # aligned by epochs 39 and 54)
    peak = info["robust_peak"]  # the caller's robust[-1], None when not finite
    recovering = learning and isinstance(peak, float) and peak >= threshold - margin
    climb_ok = forming and (needed <= patience or climbing)
    if validations_past < patience and (climb_ok or recovering):
        what = (f"climbing: ~{needed:.0f} validations to {threshold:.2f} at the fastest plausible rate" if climb_ok else
                f"still learning: the loss made a new best lately and the alignment held {peak:.2f} before")
        return abstain(name, Reason.NOT_YET_ALIGNED,
                       f"past the deadline but {what} (score {a[-1]:.2f}, "
                       f"{validations_past}/{patience} validations of grace used)", **info)
    why = (f"no new high for {age} validations (robust peak {info['robust_peak']:.2f})" if not forming else
           "no longer climbing" if rate <= 0 else
           f"~{needed:.0f} validations to go" if needed > patience else f"{validations_past} validations past the deadline")
    return result(name, 1.0, Reason.NEVER_ALIGNED,
                  f"never aligned: score {a[-1]:.2f} (health {health:.2f}) < {threshold:.2f} at epoch "
                  f"{epoch:g}, deadline {deadline:g}; {why}", prune=True, **info)


def _not_due(name: str, a: np.ndarray, epoch: float, threshold: float, deadline: float, margin: float,
             info: dict[str, Any]) -> DetectorResult | None:
    """Before the deadline, or holding a marginal alignment after it: not a failure (and no plateau stop)."""
    if epoch < deadline or a.size < 3:
        return abstain(name, Reason.NOT_YET_ALIGNED,
                       f"not aligned yet ({a[-1]:.2f} < {threshold:.2f}); deadline epoch {deadline:g}, "
                       f"now {epoch:g}", **info)
    holding = held_alignment(a)
    if holding is not None and holding >= threshold - margin:  # formed, not yet sharp
        return abstain(name, Reason.NOT_YET_ALIGNED,
                       f"marginal alignment: holding {holding:.2f}, within {margin:.2f} of {threshold:.2f} "
                       f"past the deadline (epoch {epoch:g}); not a failure, no plateau stop", **info)
    return None


def _peak_age(robust: np.ndarray) -> int:
    """Validations since the robust peak (``running_peak``'s output) last rose (all of them if never)."""
    peak = np.nan_to_num(robust, nan=-np.inf)
    rises = np.flatnonzero(np.diff(peak) > 0)
    return int(peak.size - 2 - rises[-1]) if rises.size else int(peak.size)


def _validations_past_deadline(epochs: np.ndarray, deadline: float, n: int) -> int:
    """Validations logged after the deadline epoch (without epochs, the validation count stands in).
    Counted, not converted from epochs, so a warm-started generation that starts past the deadline
    (global epochs) gets its grace from its own first validation on."""
    ep = epochs[np.isfinite(epochs)]
    return int(np.sum(ep > deadline)) if ep.size else max(0, n - int(math.ceil(deadline)))
