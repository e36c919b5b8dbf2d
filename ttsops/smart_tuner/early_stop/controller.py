"""EarlyStopController: the final early-stopping decision, inside a generation and across them.

Levels (SPEC §6):

1. patience + relative ``min_delta``: curriculum patience (``adaptive_patience``) on the smoothed
   loss inside a trial; ``tuner_patience`` generations without a ``tuner_min_delta`` improvement of
   the objective across the study;
2. detectors (``detectors.py``, ``stats.py``, ``forecast.py``, ``attention.py``): CUSUM, Mann-Kendall + Sen's slope, GP forecast, attention health;
3. the weighted vote: each group's score (``statistical_consensus`` = mean of Mann-Kendall, CUSUM
   and adaptive patience; ``bayesian_prediction`` = 1 - P(improve) from the GP; ``attention_analysis``)
   is weighted by ``ensemble_weights`` over the groups that vote, and the run stops at >= ``stop_threshold`` (0.7:
   the vote needs the statistics and the forecast to agree).

Rules around the vote (in this order): divergence / non-finite loss prunes at once; a failing
alignment (never formed, or collapsed) prunes; nothing stops during the first
``min_validations``; no plateau stop while the alignment has not yet reached
``alignment_threshold``, or reached it once but its smoothed level has fallen back below it
(a Tacotron loss often flattens before attention snaps into place, and again while a marginal
alignment firms up: two of our recorded runs dropped 20-30% after such a plateau), nor within
``min_validations`` of the alignment first reaching the threshold (a recorded run was stopped for
"overfitting" one validation after its alignment formed, just before its loss fell by 27%); and
no stop the vote asks for while ``train_loss`` (when the history has it) is still falling by at
least ``train_progress_floor`` over the horizon (Prechelt's training progress: recorded demo-size
runs sat flat for 20-60 epochs while their training loss kept falling, then fell 8-49% more).
It vetoes overfitting stops too (the two cannot be told apart on these curves), and it weakens
near the end of the budget, where the horizon is shorter. Nor does a plateau stop while the
``learning_rate`` schedule is still lowering the rate (``lr_annealing_detector``: down by
``lr_annealing_drop`` over ``window`` validations, not yet spent): a plateau at a falling rate is not
the model's floor (a recorded 48-clip run fell 11.6% more as its rate decayed); a real rise
(overfitting by more than ``min_delta``) still stops.
There is deliberately no "max_patience ends it anyway" rule: on noisy or slowly converging curves
it was the main source of false stops in the replay benchmark.

Every :class:`Decision` carries all detector verdicts (``to_dict()`` is JSON, ``to_tags()`` gives
MLflow tags) so the tuner can log it and hand it to the AlertManager. ``update(history)`` is the
in-trial call; ``decide_study(objectives)`` the study-level one. Stages and the alignment deadline count the
``global_epoch`` column when the history has it (train.py's total epochs, carried over a warm start,
so a warm-started generation continues the curriculum), else ``epoch``. Decisions take milliseconds: the
GP sees at most ``gp_window`` points, starts from the previous fit and is cached on its input.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from ttsops.config import SmartEarlyStoppingConfig
from ttsops.errors import TunerError
from ttsops.smart_tuner.early_stop.attention import attention_detector
from ttsops.smart_tuner.early_stop.detectors import (
    Action,
    DetectorResult,
    History,
    Reason,
    abstain,
    adaptive_patience,
    adaptive_patience_detector,
    as_array,
    columns,
    divergence_detector,
    lr_annealing_detector,
    patience_detector,
    result,
    since_improvement,
)
from ttsops.smart_tuner.early_stop.forecast import forecast_detector, load_backend
from ttsops.smart_tuner.early_stop.stats import cusum_detector, training_progress_detector, trend_detector
from ttsops.smart_tuner.early_stop.vote import GROUPS, Decision, DetectorParams, vote

STATE_VERSION = 1


class EarlyStopController:
    """Early-stop decisions for one study: ``decide_trial`` per validation, ``decide_study`` per
    generation. Resumable with ``state_dict()`` / ``load_state_dict()``."""

    def __init__(
        self, cfg: SmartEarlyStoppingConfig | None = None, params: DetectorParams | None = None, *,
        metric: str = "val_loss", clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.cfg = cfg or SmartEarlyStoppingConfig()
        self.params = params or DetectorParams()
        self.metric = metric
        self._clock = clock
        self._theta: dict[str, list[float] | None] = {"trial": None, "study": None}
        self._gp_cache: OrderedDict[tuple[Any, ...], DetectorResult] = OrderedDict()
        self._log: list[dict[str, Any]] = []
        self._counts = {"trial": 0, "study": 0}
        self._fits: dict[str, int] = {}
        load_backend()  # the one-time import of scikit-learn's GP belongs to set-up, not to a decision

    # --- public API ------------------------------------------------------------------------
    @property
    def weights(self) -> dict[str, float]:
        return self.cfg.ensemble_weights.model_dump()

    @property
    def min_delta(self) -> float:
        return self.params.min_delta if self.params.min_delta is not None else self.cfg.tuner_min_delta

    @property
    def alignment_deadline(self) -> float:
        """Epoch by which attention must have aligned: ``alignment_deadline_epochs`` or the end of
        the ``warmup`` curriculum stage."""
        if self.params.alignment_deadline_epochs is not None:
            return self.params.alignment_deadline_epochs
        stages = self.cfg.adaptive_patience.stages
        return float(stages["warmup"].epochs) if "warmup" in stages else 0.0

    def update(self, metrics_history: History, *, budget: int | None = None,
               inherited_alignment: float | None = None) -> Decision:
        """In-trial decision after a validation (alias of :meth:`decide_trial`)."""
        return self.decide_trial(metrics_history, budget=budget, inherited_alignment=inherited_alignment)

    def new_trial(self) -> None:
        """Forget per-trial warm starts (call when a new generation starts)."""
        self._theta["trial"] = None
        self._fits["trial"] = 0
        self._gp_cache.clear()

    def decide_trial(self, history: History, *, budget: int | None = None,
                     inherited_alignment: float | None = None) -> Decision:
        """Stop (converged/plateau/overfitting), prune (failing) or continue the running trial.

        ``history``: metric -> values per validation (``self.metric`` required; ``global_epoch`` or ``epoch``,
        ``attention_alignment_score``, ``attention_entropy``, ``grad_norm`` used when present).
        ``budget``: validations the trial is configured for, if known (caps the look-ahead).
        ``inherited_alignment``: where the alignment held in the checkpoint the trial warm-started from
        (the tuner passes it when the weights arrive whole); at or above the threshold, the alignment
        counts as formed from the first validation, so losing it is a collapse at once.
        """
        t0 = self._clock()
        h = columns(history)
        if self.metric not in h:
            raise TunerError(f"early stop: metric {self.metric!r} missing from history (have: {', '.join(sorted(h)) or 'nothing'})")
        verdicts = self._trial_verdicts(h, budget, inherited_alignment)
        decision = self._trial_decision(h, verdicts)
        return self._record(dataclasses.replace(decision, elapsed_ms=(self._clock() - t0) * 1e3))

    def decide_study(
        self, generation_objectives: Sequence[float], *, generation_alignment: Sequence[float] | None = None,
        direction: Literal["minimize", "maximize"] = "minimize", line_levels: Sequence[float] | None = None,
        line_train_loss: Sequence[float] | None = None,
    ) -> Decision:
        """End the study? ``generation_objectives``: the objective of each finished generation in
        order (NaN for a failed one); ``generation_alignment``: where each generation's alignment
        held at its end (the tuner passes the median of its last 5 scores), if known (the study
        does not end on a plateau before some generation aligned); ``line_levels``: the level of the
        line's head after each of them, ``line_train_loss``: each one's ``train_loss`` (the study
        does not end while either still falls significantly: the line is still learning)."""
        t0 = self._clock()
        sign, pat = (-1.0 if direction == "maximize" else 1.0), self.cfg.tuner_patience
        y = as_array(generation_objectives) * sign
        verdicts = self._study_verdicts(y, generation_alignment)
        for name, what, series in (("line_progress", "the line's level", as_array(line_levels) * sign),
                                   ("line_training", "the line's train_loss", as_array(line_train_loss))):
            if series.size:  # gates like the in-trial training progress (rule 5), on the line
                verdicts.append(training_progress_detector(
                    series, window=2 * pat + 2, horizon=pat, floor=self.cfg.tuner_min_delta, alpha=self.params.alpha,
                    min_points=4, name=name, what=what, per="generations"))
        decision = self._study_decision(y, verdicts)
        return self._record(dataclasses.replace(decision, elapsed_ms=(self._clock() - t0) * 1e3))

    def state_dict(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "theta": dict(self._theta), "counts": dict(self._counts),
                "log": list(self._log)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
            got = state.get("version") if isinstance(state, Mapping) else type(state).__name__
            raise TunerError(f"early stop state: version {got!r} not supported (expected {STATE_VERSION})")
        self._theta = {k: (list(v) if v is not None else None) for k, v in dict(state["theta"]).items()}
        self._counts = {k: int(v) for k, v in dict(state["counts"]).items()}
        self._log = list(state["log"])[-self.params.log_size :]
        self._gp_cache.clear()

    @property
    def decisions(self) -> list[dict[str, Any]]:
        """Compact log of the latest decisions (level, action, reason, score, message)."""
        return list(self._log)

    # --- in-trial -------------------------------------------------------------------------
    def _horizon(self, n: int, budget: int | None) -> int:
        horizon = self.params.horizon or self.cfg.adaptive_patience.max_patience
        return max(1, min(horizon, budget - n)) if budget else horizon

    def _trial_verdicts(self, h: dict[str, np.ndarray], budget: int | None,
                        inherited: float | None = None) -> list[DetectorResult]:
        p, cfg, md = self.params, self.cfg, self.min_delta
        y = h[self.metric]
        epochs = epoch_column(h)
        epoch = float(epochs[-1]) if epochs is not None and epochs.size and math.isfinite(epochs[-1]) else float(y.size)
        _, patience = adaptive_patience(epoch, cfg.adaptive_patience)
        horizon = self._horizon(y.size, budget)
        attention = self._attention(h, epochs, y, inherited)
        # not aligned yet (robust peak below the threshold): only a larger jump is a divergence
        unaligned = attention.reason is not Reason.MISSING_METRIC and "aligned_at" not in attention.details
        verdicts = [
            divergence_detector(y, factor=p.divergence_factor_unaligned if unaligned else p.divergence_factor,
                                consecutive=p.divergence_consecutive, grad_norm=h.get("grad_norm")),
            trend_detector(y, window=p.window, horizon=horizon, min_delta=md, alpha=p.alpha),
            cusum_detector(y, patience=patience, min_delta=md, h=p.cusum_h),
            adaptive_patience_detector(y, epochs, cfg.adaptive_patience, md, alpha=p.smoothing_alpha),
            self._forecast(y, horizon, "trial"),
            attention,
        ]
        if p.train_progress_floor is not None:
            verdicts.append(training_progress_detector(h.get("train_loss"), window=p.window, horizon=horizon,
                                                       floor=p.train_progress_floor, alpha=p.alpha))
        if p.lr_annealing_drop is not None:
            verdicts.append(lr_annealing_detector(h.get("learning_rate"), window=p.window, drop=p.lr_annealing_drop,
                                                  min_fraction=p.lr_annealing_min_fraction))
        baseline = patience_detector(y, cfg.adaptive_patience.initial_patience, md)
        verdicts.append(dataclasses.replace(baseline, voting=False))
        return verdicts

    def _attention(self, h: dict[str, np.ndarray], epochs: np.ndarray | None, objective: np.ndarray,
                   inherited: float | None = None) -> DetectorResult:
        am = self.cfg.attention_monitoring
        if not am.enabled:
            return abstain("attention", Reason.MISSING_METRIC, "attention monitoring disabled")
        ap = self.cfg.adaptive_patience
        return attention_detector(
            h.get("attention_alignment_score"), threshold=am.alignment_threshold,
            monotonic_penalty=am.monotonic_penalty, epochs=epochs, deadline_epoch=self.alignment_deadline,
            progress_patience=ap.max_patience, collapse_margin=self.params.collapse_margin,
            consecutive=self.params.collapse_consecutive, firm_margin=self.params.firm_margin,
            barely_formed_consecutive=self.params.barely_formed_consecutive, entropy=h.get("attention_entropy"),
            monotonicity=h.get("attention_monotonicity"), alpha=self.params.smoothing_alpha,
            flatline_score=self.params.flatline_score, flatline_validations=self.params.flatline_validations,
            objective=objective, improving_window=self.params.improving_window, min_delta=self.min_delta,
            vote_span=self.params.attention_vote_span, vote_max=self.params.stop_threshold, inherited=inherited,
        )

    def _forecast(self, y: np.ndarray, horizon: float, level: str) -> DetectorResult:
        tail = y[np.isfinite(y)][-self.params.gp_window :]
        key = (level, tail.tobytes(), float(horizon), y.size)
        if key in self._gp_cache:
            self._gp_cache.move_to_end(key)
            return self._gp_cache[key]
        self._fits[level] = self._fits.get(level, 0) + 1
        refit = (self._fits[level] - 1) % self.params.gp_refit_every == 0
        got = forecast_detector(y, horizon=horizon, min_delta=self.min_delta, window=self.params.gp_window,
                                theta=self._theta[level], optimize=refit, inflation=self.params.gp_std_inflation)
        if "theta" in got.details:
            self._theta[level] = list(got.details["theta"])
        self._gp_cache[key] = got
        while len(self._gp_cache) > self.params.gp_cache_size:
            self._gp_cache.popitem(last=False)
        return got

    def _trial_decision(self, h: dict[str, np.ndarray], verdicts: list[DetectorResult]) -> Decision:
        n = int(h[self.metric].size)
        by = {v.name: v for v in verdicts}
        score, groups = vote(verdicts, self.weights)
        make = _maker("trial", verdicts, groups, n, score)
        for veto in (by["divergence"], by["attention"]):
            if veto.action is Action.PRUNE:
                return make(Action.PRUNE, veto.reason, veto.score, f"prune: {veto.message}")
        if n < self.params.min_validations:
            return make(Action.CONTINUE, Reason.WARMUP, 1.0,
                        f"warm-up: {n} of {self.params.min_validations} validations")
        att = by["attention"]
        if att.reason in (Reason.NOT_YET_ALIGNED, Reason.ALIGNMENT_SETTLING):
            return make(Action.CONTINUE, Reason.WAITING_FOR_ALIGNMENT, 1.0,
                        f"no plateau stop before the alignment holds: {att.message}")
        # held_since >= aligned_at: the later of the formation and the last re-firming
        since = n - 1 - int(att.details.get("held_since", -self.params.min_validations))
        if att.reason is Reason.ALIGNED and since < self.params.min_validations:
            # the loss changes regime when attention forms (or firms up again after settling below
            # the threshold): trends over the climb say nothing yet
            return make(Action.CONTINUE, Reason.WAITING_FOR_ALIGNMENT, 1.0,
                        f"aligned (holding) for {since} validation(s): the loss gets "
                        f"{self.params.min_validations} validations to respond before a plateau stop")
        tp = by.get("training_progress")
        if tp is not None and tp.score >= 0.5 and score >= self.params.stop_threshold:
            return make(Action.CONTINUE, Reason.TRAINING_PROGRESS, 1.0,
                        f"vote {score:.2f} says stop, but the model is still learning: {tp.message}")
        an = by.get("lr_annealing")
        if (an is not None and an.score >= 0.5 and score >= self.params.stop_threshold
                and not self._overfitting(by)):
            return make(Action.CONTINUE, Reason.LR_ANNEALING, 1.0,
                        f"vote {score:.2f} says plateau, but the schedule is still lowering the rate: {an.message}")
        return self._by_vote(make, verdicts, score)

    def _overfitting(self, by: Mapping[str, DetectorResult]) -> bool:
        """The vote's case is a real rise (a lower rate does not cure overfitting): the strongest voter
        says overfitting and the curve rose by more than ``min_delta`` over the trend window (Mann-
        Kendall also calls a flat noisy curve "rising" at +0.02%/validation)."""
        mk = by["mann_kendall"]
        rise = (mk.details.get("sen_slope_rel") or 0.0) * max(0, (mk.details.get("window") or 0) - 1)
        return _top_reason(by.values()) is Reason.OVERFITTING and rise > self.min_delta

    def _by_vote(self, make: Callable[..., Decision], verdicts: list[DetectorResult], score: float) -> Decision:
        thr = self.params.stop_threshold
        voters = sorted((v for v in verdicts if v.voting), key=lambda v: -v.score)
        lines = "; ".join(f"{v.name}: {v.message}" for v in voters[:3])
        if score >= thr:
            top = _top_reason(voters)
            return make(Action.STOP, top, score, f"stop (vote {score:.2f} >= {thr:.2f}): {lines}")
        return make(Action.CONTINUE, Reason.VOTE_CONTINUE, 1.0 - score,
                    f"continue (vote {score:.2f} < {thr:.2f}): {lines}")

    # --- across generations ---------------------------------------------------------------
    def _study_verdicts(self, y: np.ndarray, alignment: Sequence[float] | None) -> list[DetectorResult]:
        cfg, md = self.cfg, self.cfg.tuner_min_delta
        pat = patience_detector(y, cfg.tuner_patience, md, name="generation_patience")
        if pat.reason is Reason.NON_FINITE:  # a failed generation is not a reason to end the study
            wait, best, _ = since_improvement(y, md)
            pat = result("generation_patience", min(1.0, wait / cfg.tuner_patience), Reason.NO_IMPROVEMENT
                         if wait >= cfg.tuner_patience else Reason.IMPROVING,
                         f"{wait} generations without a {md:.2%} improvement (best {best:.5g})", wait=wait)
        best_so_far = np.fmin.accumulate(np.where(np.isfinite(y), y, np.inf))
        best_so_far = np.where(np.isfinite(best_so_far), best_so_far, np.nan)
        return [pat, trend_detector(best_so_far, window=2 * cfg.tuner_patience + 2, horizon=cfg.tuner_patience,
                                    min_delta=md, alpha=self.params.alpha, min_points=4),
                self._forecast(y, cfg.tuner_patience, "study"), self._study_attention(y, alignment)]

    def _study_attention(self, y: np.ndarray, alignment: Sequence[float] | None) -> DetectorResult:
        a = as_array(alignment)
        thr = self.cfg.attention_monitoring.alignment_threshold
        if not self.cfg.attention_monitoring.enabled or a.size != y.size or not np.isfinite(y).any():
            return abstain("attention", Reason.MISSING_METRIC, "no per-generation alignment given")
        best = int(np.nanargmin(np.where(np.isfinite(y), y, np.nan)))
        if not (math.isfinite(a[best]) and a[best] >= thr):
            return abstain("attention", Reason.NOT_YET_ALIGNED,
                           f"best generation {best + 1} is not aligned ({a[best]:.2f} < {thr:.2f})")
        # votes like the in-trial group: how settled the best generation's alignment is, up to the stop
        # threshold (a barely aligned best holds an early end back; the patience rule still ends it)
        span, top = self.params.attention_vote_span, self.params.stop_threshold
        firmness = min(1.0, (float(a[best]) - thr) / span)
        return result("attention", top * firmness, Reason.ALIGNED,
                      f"best generation {best + 1} aligned ({a[best]:.2f}, settled {firmness:.0%} of {span:.2f} "
                      f"above {thr:.2f})", ends=False, firmness=firmness, alignment=float(a[best]))

    def _study_decision(self, y: np.ndarray, verdicts: list[DetectorResult]) -> Decision:
        by = {v.name: v for v in verdicts}
        score, groups = vote(verdicts, self.weights)
        make = _maker("study", verdicts, groups, int(y.size), score)
        wait = int(by["generation_patience"].details.get("wait", 0))
        if y.size < 2:
            return make(Action.CONTINUE, Reason.INSUFFICIENT_DATA, 1.0, f"{y.size} generation(s) so far")
        if by["attention"].reason is Reason.NOT_YET_ALIGNED:
            return make(Action.CONTINUE, Reason.WAITING_FOR_ALIGNMENT, 1.0, by["attention"].message)
        early_ok = y.size >= self.cfg.tuner_patience and wait >= max(2, math.ceil(self.cfg.tuner_patience / 2))
        lp = next((by[g] for g in ("line_progress", "line_training") if g in by and by[g].score >= 0.5), None)
        if lp is not None and (wait >= self.cfg.tuner_patience or (
                early_ok and score >= self.params.stop_threshold)):
            return make(Action.CONTINUE, Reason.TRAINING_PROGRESS, 1.0,
                        f"{wait} generations without a better objective, but the line still descends: {lp.message}")
        if wait >= self.cfg.tuner_patience:
            return make(Action.STOP, Reason.STUDY_NO_IMPROVEMENT, 1.0,
                        f"end study: {by['generation_patience'].message}")
        if early_ok and score >= self.params.stop_threshold:
            return self._by_vote(make, verdicts, score)
        return make(Action.CONTINUE, Reason.VOTE_CONTINUE, 1.0 - score,
                    f"continue study (vote {score:.2f}, {wait}/{self.cfg.tuner_patience} generations without improvement)")

    # --- bookkeeping ----------------------------------------------------------------------
    def _record(self, d: Decision) -> Decision:
        self._counts[d.level] = self._counts.get(d.level, 0) + 1
        self._log.append({"level": d.level, "n": d.n_points, "action": d.action.value,
                          "reason": d.reason.value, "score": round(d.score, 4), "message": d.message})
        del self._log[: -self.params.log_size]
        return d


def epoch_column(h: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """The epochs the curriculum counts: ``global_epoch`` (train.py's total, which a warm start carries
    on from its source) when logged, else ``epoch``; None when neither has a finite value."""
    for name in ("global_epoch", "epoch"):
        col = h.get(name)
        if col is not None and np.isfinite(col).any():
            return col
    return None


def _top_reason(verdicts: Iterable[DetectorResult]) -> Reason:
    """The reason of the strongest voter on the objective when it says end (else the vote's own);
    the attention group's vote (how settled the alignment is) says why a stop is safe, not why it is due."""
    top = max((v for v in verdicts if v.voting and v.name not in GROUPS["attention_analysis"]),
              key=lambda v: v.score, default=None)
    return top.reason if top is not None and top.score >= 0.5 else Reason.VOTE_STOP


def _maker(level: Literal["trial", "study"], verdicts: list[DetectorResult], groups: dict[str, float | None],
           n: int, score: float) -> Callable[..., Decision]:
    def make(action: Action, reason: Reason, confidence: float, message: str) -> Decision:
        return Decision(level, action, reason, float(score), float(confidence), message, tuple(verdicts),
                        groups, n)

    return make
