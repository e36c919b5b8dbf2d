"""``ttsops bench early-stop CURVES_DIR``: replay learning curves through the EarlyStopController
(the definitions, the replay and the summaries; the command line and its tables: ``bench_cli.py``).

Each curve (``*.json`` / ``*.csv`` under CURVES_DIR, format in benchmarks/curves/FORMAT.md) is fed to
``EarlyStopController.decide_trial`` one validation at a time, as a live run would be (the planned
budget, the curve's length, is passed as ``budget``). One replay yields the stop point of every
method: the ensemble, each detector alone (its own verdict), the patience baseline and no stopping.

Per curve and method (T = the curve's epochs, t = the epoch at which the method stopped):

- saved ``S = 1 - t / T`` (0 when it never stops);
- regret ``R = (best before stop - best of full run) / |best of full run|`` on the objective
  (``val_loss``), over *usable* validations: where the curve logs attention, a validation counts
  once the alignment has reached ``alignment_threshold`` and while it is not collapsed, i.e. the
  score is >= the threshold or within ``collapse_margin`` of its peak so far (the attention
  detector's own collapse rule, per point). An unaligned Tacotron2 checkpoint cannot synthesise,
  and teacher-forced ``val_loss`` keeps falling on runs whose attention never formed or died, so
  the raw minimum of such a run is not a model anyone would keep. Stopping before any usable
  validation is R = inf; a run that never aligns has no usable model, so stopping it loses nothing
  (R = 0). ``R raw`` is the issue's formula over every validation; ``false raw (healthy)`` applies
  it to the curves whose label is not a failure (converging, plateau, noisy, overfitting): there
  the two definitions should agree, and where they do not, the table shows it;
- a false stop is ``R > tuner_min_delta``;
- alignment-failure latency: validations from the failure onset to the stop. Onset: for a run that
  aligned, the first of >= 3 consecutive validations below the marginal band (``threshold -
  collapse_margin``, 0.65) *and* more than ``collapse_margin`` (0.15) below the robust peak so far
  (``running_peak``: the highest median of 3 consecutive scores; a wobble around the threshold, or
  a sag into the band a marginal alignment holds, is not a collapse);
  for a run that never aligns (its robust peak never reached the threshold), the first of 3
  validations in a row at or after the alignment deadline (end of ``warmup``) where the median of
  the last 5 scores is more than the margin below the threshold (a marginal alignment, 0.65-0.8, is
  not a failure; see ``detectors_attention``). Only for curves not labelled healthy (converging,
  plateau, noisy, overfitting): the label says what the whole curve showed, and an alignment that
  dipped and came back to the run's best loss is no failure (if it is pruned, that is a false stop);
- ``oracle``: stopping with hindsight at the earliest validation whose R is <= ``tuner_min_delta``
  (``hindsight_stop``): the most any rule can save on a curve without a false stop, so its median S
  is the ceiling of the curve set (``ceiling``);
- "plateau before alignment": a stop that is not a failure verdict (divergence, non-finite,
  never aligned, collapse) taken before the alignment's robust peak first reached the threshold.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ttsops.bench.curves import Curve
from ttsops.config import TunerConfig
from ttsops.smart_tuner.early_stop.attention import held_alignment, running_peak
from ttsops.smart_tuner.early_stop.controller import DetectorParams, EarlyStopController
from ttsops.smart_tuner.early_stop.detectors import FAILURE_REASONS, patience_detector

ALIGN = "attention_alignment_score"
DETECTORS = ("divergence", "mann_kendall", "cusum", "adaptive_patience", "gp_forecast", "attention")
MEDIAN_S_TARGET, FALSE_STOP_TARGET = 0.5, 0.05  # the early-stopping issue's acceptance targets
PATIENCE_SWEEP = (10, 15, 20, 30)  # extra patience baselines, to compare at matched risk
METHODS = ("ensemble", *DETECTORS, "patience", *(f"patience_{p}" for p in PATIENCE_SWEEP), "no_stopping", "oracle")
# "oracle" knows the whole curve: it stops at the first validation after which the run never gets
# more than tuner_min_delta better (its R <= min_delta, so it never stops falsely). No causal rule can
# save more at zero false stops: its median S is the ceiling of the set, whatever the detectors do.


@dataclass(frozen=True)
class Outcome:
    curve: str
    label: str
    method: str
    stop: int | None  # validations seen when it stopped (1-based); None = never
    reason: str
    saved: float
    regret: float
    regret_raw: float
    regret_true: float | None  # on ``<metric>_noise_free`` when the curve has it (synthetic curves)
    latency: int | None  # validations from alignment-failure onset to the stop
    onset: int | None
    plateau_before_alignment: bool


# --- replay and scoring -------------------------------------------------------------------------
def replay(curve: Curve, cfg: TunerConfig, params: DetectorParams | None = None) -> tuple[dict[str, tuple[int, str]], list[tuple[float, float]]]:
    """Stop point (validations seen, reason) of every method that stopped, and the (wall, CPU)
    milliseconds of each decision (CPU time is the decision's own cost on a shared, busy box)."""
    ctl = EarlyStopController(cfg.smart_early_stopping, params, metric=curve.metric)
    stops: dict[str, tuple[int, str]] = {}
    times: list[tuple[float, float]] = []
    n = curve.length
    for t in range(1, n + 1):
        cpu0 = time.process_time()
        d = ctl.decide_trial({k: v[:t] for k, v in curve.columns.items()}, budget=n)
        times.append((d.elapsed_ms, (time.process_time() - cpu0) * 1e3))
        if d.should_end and "ensemble" not in stops:
            stops["ensemble"] = (t, d.reason.value)
        for v in d.verdicts:
            if v.ends_run and v.name not in stops:
                stops[v.name] = (t, v.reason.value)
    y = curve.columns[curve.metric]
    md = cfg.smart_early_stopping.tuner_min_delta
    for p in PATIENCE_SWEEP:
        for t in range(1, n + 1):
            v = patience_detector(y[:t], p, md)
            if v.ends_run:
                stops[f"patience_{p}"] = (t, v.reason.value)
                break
    return stops, times


def alignment_onset(curve: Curve, threshold: float, deadline: float, margin: float = 0.15) -> int | None:
    """0-based validation where the alignment failure became a fact (None: no failure)."""
    a = curve.columns.get(ALIGN)
    if a is None or not np.isfinite(a).any():
        return None
    peak = running_peak(a)
    reached = np.flatnonzero(np.nan_to_num(peak, nan=-np.inf) >= threshold)
    if reached.size == 0:
        ep = curve.columns.get("epoch", np.arange(1, a.size + 1, dtype=float))
        def failing(i: int) -> bool:  # a marginal alignment (holding within the margin) is no failure
            held = held_alignment(a[: i + 1])
            return held is not None and held < threshold - margin

        late = np.flatnonzero(ep >= deadline)
        for i in late.tolist():  # like a collapse: 3 validations in a row (or to the end of the curve)
            if all(failing(int(j)) for j in late[(late >= i) & (late < i + 3)]):
                return int(i)
        return None
    for i in range(int(reached[0]) + 1, a.size - 2):
        # NaN compares False: missing scores do not count
        # out of the marginal band (below threshold - margin, the never-aligned rule's line); the
        # robust peak is >= the threshold from here on, so also more than the margin below it
        if np.all(a[i : i + 3] < threshold - margin):
            return i
    return None


FAILURE_LABELS = frozenset({"diverging", "never_aligned", "alignment_collapse"})
HEALTHY_LABELS = frozenset({"converging", "plateau", "noisy", "overfitting"})


def usable_mask(a: np.ndarray, threshold: float, margin: float) -> np.ndarray:
    """Validations whose checkpoint could be kept: aligned once, and not collapsed (score >= the
    threshold or within ``margin`` of the robust peak so far, ``running_peak``). NaN scores are
    not usable."""
    fin = np.where(np.isfinite(a), a, -np.inf)
    peak = np.nan_to_num(running_peak(a), nan=-np.inf)
    reached = peak >= threshold  # robust: one lucky validation is not an alignment
    return reached & ((fin >= threshold) | (fin >= peak - margin))


def _best(y: np.ndarray, mask: np.ndarray) -> float:
    sel = y[mask & np.isfinite(y)]
    return float(sel.min()) if sel.size else math.inf


def _true_regret(y: np.ndarray, truth: np.ndarray, usable: np.ndarray, t: int) -> float:
    """Regret of the checkpoint one would keep (lowest measured value among usable validations),
    scored on the noise-free curve: what stopping really cost, free of the minimum's luck."""

    def kept(upto: int) -> float:
        m = usable & np.isfinite(y) & (np.arange(y.size) < upto)
        return float(truth[np.flatnonzero(m)[np.argmin(y[m])]]) if m.any() else math.inf

    full = kept(y.size)
    return 0.0 if math.isinf(full) else (kept(t) - full) / (abs(full) or 1.0)


def score(curve: Curve, method: str, stop: tuple[int, str] | None, *, threshold: float,
          deadline: float, margin: float = 0.15) -> Outcome:
    y = curve.columns[curve.metric]
    n = curve.length
    a = curve.columns.get(ALIGN)
    has_align = a is not None and bool(np.isfinite(a).any())
    usable = usable_mask(a, threshold, margin) if a is not None and has_align else np.ones(n, dtype=bool)
    t, reason = stop if stop is not None else (n, "")
    seen = np.arange(n) < t
    full, full_raw = _best(y, usable), _best(y, np.ones(n, dtype=bool))
    truth = curve.columns.get(f"{curve.metric}_noise_free")
    regret_true = None if truth is None else 0.0
    if stop is None:
        regret = regret_raw = 0.0
    else:
        regret = 0.0 if math.isinf(full) else (_best(y, usable & seen) - full) / (abs(full) or 1.0)
        regret_raw = (_best(y, seen) - full_raw) / (abs(full_raw) or 1.0)
        if truth is not None:
            regret_true = _true_regret(y, truth, usable, t)
    ep = curve.columns.get("epoch")
    if stop is None:
        saved = 0.0
    elif ep is not None and np.isfinite(ep[[t - 1, n - 1]]).all() and ep[n - 1] > 0:
        saved = 1.0 - float(ep[t - 1]) / float(ep[n - 1])
    else:
        saved = 1.0 - t / n
    # a curve labelled healthy (the label is what its whole curve showed) has no alignment failure,
    # whatever a dip of its score looks like: pruning it is a false stop, not a failure caught
    onset = None if curve.label in HEALTHY_LABELS else alignment_onset(curve, threshold, deadline, margin)
    latency = (t - 1 - onset) if (onset is not None and stop is not None) else None
    aligned_before = a is not None and has_align and bool(np.any(np.nan_to_num(running_peak(a)[:t], nan=-np.inf) >= threshold))
    failure = reason in {r.value for r in FAILURE_REASONS}
    plateau_early = stop is not None and has_align and not aligned_before and not failure and method != "oracle"
    return Outcome(curve.name, curve.label, method, stop[0] if stop else None, reason, saved, regret,
                   regret_raw, regret_true, latency, onset, plateau_early)


def hindsight_stop(curve: Curve, min_delta: float, *, threshold: float, deadline: float, margin: float) -> int:
    """The earliest validation (1-based) at which stopping costs at most ``min_delta`` (the oracle).
    R never rises with t (the best over a longer prefix can only be lower), so a bisection finds it;
    stopping at the last validation has R = 0."""
    lo, hi = 1, curve.length
    while lo < hi:
        mid = (lo + hi) // 2
        if score(curve, "oracle", (mid, "hindsight"), threshold=threshold, deadline=deadline, margin=margin).regret <= min_delta:
            hi = mid
        else:
            lo = mid + 1
    return lo


def ceiling(rows: Sequence[dict[str, Any]]) -> str:
    """What the hindsight oracle says about the median-S target on this curve set."""
    by = {r["method"]: r for r in rows}
    o, e = by["oracle"], by["ensemble"]
    budget = o.get("median_S_with_false_budget", o["median_S"])
    reach = ("under this ceiling" if o["median_S"] >= MEDIAN_S_TARGET else
             f"out of reach of any rule on this set, even one allowed {FALSE_STOP_TARGET:.0%} false stops "
             f"(at most {budget:.2f})" if budget < MEDIAN_S_TARGET else
             f"reachable only with false stops (up to {budget:.2f} with {FALSE_STOP_TARGET:.0%} of them)")
    return (f"ceiling: stopping with hindsight (the earliest stop with R <= min_delta on each curve: no false stop "
            f"by R over usable checkpoints) "
            f"saves median S {o['median_S']:.2f}, mean {o['mean_S']:.2f}; the {MEDIAN_S_TARGET:.2f} target is {reach}; "
            f"the ensemble earns {e['mean_S_earned'] / o['mean_S']:.0%} of the oracle's mean S "
            f"(mean S {e['mean_S_earned']:.2f} without its false stops' savings)"
            if o["mean_S"] > 0 else "ceiling: no curve can be stopped early without regret")


def evaluate(curves: Sequence[Curve], cfg: TunerConfig, params: DetectorParams | None = None,
             progress: Any = None) -> tuple[list[Outcome], list[tuple[float, float]]]:
    ses = cfg.smart_early_stopping
    p = params or DetectorParams()
    deadline = EarlyStopController(ses, p).alignment_deadline
    outcomes: list[Outcome] = []
    times: list[tuple[float, float]] = []
    for curve in curves:
        stops, t = replay(curve, cfg, params)
        times += t
        stops["oracle"] = (hindsight_stop(curve, ses.tuner_min_delta, threshold=ses.attention_monitoring.alignment_threshold,
                                          deadline=deadline, margin=p.collapse_margin), "hindsight")
        for m in METHODS:
            outcomes.append(score(curve, m, stops.get(m), threshold=ses.attention_monitoring.alignment_threshold,
                                  deadline=deadline, margin=p.collapse_margin))
        if progress is not None:
            progress()
    return outcomes, times


def summarize(outcomes: Sequence[Outcome], min_delta: float) -> list[dict[str, Any]]:
    rows = []
    for m in METHODS:
        os_ = [o for o in outcomes if o.method == m]
        if not os_:
            continue
        lat = [o.latency for o in os_ if o.onset is not None]
        fails = [o for o in os_ if o.onset is not None]
        truth = [o for o in os_ if o.regret_true is not None]
        rows.append({
            "method": m, "curves": len(os_), "stopped": sum(o.stop is not None for o in os_),
            "median_S": statistics.median(o.saved for o in os_), "mean_S": statistics.fmean(o.saved for o in os_),
            # savings that cost nothing: a false stop's epochs count as not saved
            "mean_S_earned": earned(os_, min_delta),
            "median_R": statistics.median(o.regret for o in os_),
            "false_stop_rate": sum(o.regret > min_delta for o in os_) / len(os_),
            "median_R_raw": statistics.median(o.regret_raw for o in os_),
            "false_stop_rate_raw": sum(o.regret_raw > min_delta for o in os_) / len(os_),
            "false_stop_rate_raw_healthy": _rate([o.regret_raw > min_delta for o in os_ if o.label not in FAILURE_LABELS]),
            "false_stop_rate_true": (sum((o.regret_true or 0.0) > min_delta for o in truth) / len(truth)) if truth else None,
            "align_failures": len(fails),
            "latency_median": statistics.median(x for x in lat if x is not None) if any(x is not None for x in lat) else None,
            "latency_max": max((x for x in lat if x is not None), default=None),
            "failures_missed": sum(o.latency is None or o.latency > 3 for o in fails),
            "plateau_before_alignment": sum(o.plateau_before_alignment for o in os_),
        })
        if m == "oracle":  # the best median S any rule can reach with FALSE_STOP_TARGET of false stops:
            # spend them on the curves that save least, stopped at once (S <= 1)
            k = math.floor(FALSE_STOP_TARGET * len(os_))
            ordered = sorted(o.saved for o in os_)
            rows[-1]["median_S_with_false_budget"] = statistics.median(ordered[k:] + [1.0] * k)
    return rows


LABEL_METHODS = ("ensemble", "patience", "oracle")


def earned(outcomes: Sequence[Outcome], min_delta: float) -> float:
    """Mean S without the savings of false stops (a false stop's epochs count as not saved)."""
    return statistics.fmean(o.saved if o.regret <= min_delta else 0.0 for o in outcomes) if outcomes else 0.0


def by_label(outcomes: Sequence[Outcome], min_delta: float) -> list[dict[str, Any]]:
    """Per curve label (what the run showed): curves, and the median S / false stops of the ensemble,
    patience (5) and the oracle: where early stopping pays, and what is left to take. ``oracle_share``:
    the share of the hindsight oracle's mean S that the ensemble earns on that label (its mean S without
    its false stops' savings / the oracle's mean S; None where the oracle saves nothing)."""
    rows = []
    for label in sorted({o.label for o in outcomes}):
        row: dict[str, Any] = {"label": label}
        for m in LABEL_METHODS:
            os_ = [o for o in outcomes if o.label == label and o.method == m]
            if not os_:
                continue
            row["curves"] = len(os_)
            row[f"{m}_median_S"] = statistics.median(o.saved for o in os_)
            row[f"{m}_mean_S_earned"] = earned(os_, min_delta)
            row[f"{m}_false"] = sum(o.regret > min_delta for o in os_)
        oracle = row.get("oracle_mean_S_earned")
        row["oracle_share"] = (row["ensemble_mean_S_earned"] / oracle
                               if oracle and "ensemble_mean_S_earned" in row else None)
        rows.append(row)
    return rows


def _rate(flags: Sequence[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def acceptance(rows: Sequence[dict[str, Any]], times: Sequence[tuple[float, float]]) -> list[tuple[str, bool]]:
    by = {r["method"]: r for r in rows}
    e, p = by["ensemble"], by["patience"]
    better_s = e["median_S"] > p["median_S"] and e["false_stop_rate"] <= p["false_stop_rate"]
    better_r = e["false_stop_rate"] < p["false_stop_rate"] and e["median_S"] >= p["median_S"]
    # at matched risk: the patience settings that are at least as safe as the ensemble save less;
    # at matched savings: the patience settings that save at least as much stop falsely more often
    pat = [r for r in rows if r["method"].startswith("patience")]
    matched = max((r["median_S"] for r in pat if r["false_stop_rate"] <= e["false_stop_rate"]), default=0.0)
    riskiest = min((r["false_stop_rate"] for r in pat if r["median_S"] >= e["median_S"]), default=math.inf)
    wall_max = max((w for w, _ in times), default=0.0)
    cpu_max = max((c for _, c in times), default=0.0)
    return [
        (f"median S {e['median_S']:.2f} >= {MEDIAN_S_TARGET:.2f}", e["median_S"] >= MEDIAN_S_TARGET),
        (f"median R {e['median_R']:.2%} <= 0.50%", e["median_R"] <= 0.005),
        (f"false-stop rate {e['false_stop_rate']:.1%} <= {FALSE_STOP_TARGET:.0%}", e["false_stop_rate"] <= FALSE_STOP_TARGET),
        (f"plateau stops before alignment: {e['plateau_before_alignment']}", e["plateau_before_alignment"] == 0),
        (f"alignment failures detected within 3 validations: {e['align_failures'] - e['failures_missed']}"
         f"/{e['align_failures']}", e["failures_missed"] == 0),
        (f"ensemble vs patience (default {p['method']}): S {e['median_S']:.2f} vs {p['median_S']:.2f}, "
         f"false stops {e['false_stop_rate']:.1%} vs {p['false_stop_rate']:.1%}: better on one axis, "
         "not worse on the other", better_s or better_r),
        (f"at matched risk (patience settings with false stops <= the ensemble's): best median S "
         f"{matched:.2f} < ensemble {e['median_S']:.2f}", matched < e["median_S"]),
        (f"at matched savings (patience settings with median S >= the ensemble's): fewest false stops "
         f"{'inf' if math.isinf(riskiest) else f'{riskiest:.2%}'} > ensemble {e['false_stop_rate']:.1%}", riskiest > e["false_stop_rate"]),
        (f"slowest decision {cpu_max:.0f} ms CPU < 1000 ms (wall, on this shared box: {wall_max:.0f} ms)",
         cpu_max < 1000),
    ]
