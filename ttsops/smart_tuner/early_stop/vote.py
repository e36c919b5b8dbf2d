"""What the EarlyStopController is tuned with and what it answers: ``DetectorParams`` (the knobs
the YAML config does not expose), the detector ``GROUPS`` and their weighted ``vote``, and the
``Decision`` (with its JSON and MLflow-tag forms) that ``early_stop`` returns."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ttsops.errors import ConfigError
from ttsops.infra.tracking import early_stop_tag
from ttsops.smart_tuner.early_stop.detectors import Action, DetectorResult, Reason, jsonable

GROUPS: dict[str, tuple[str, ...]] = {
    "statistical_consensus": ("mann_kendall", "cusum", "adaptive_patience", "generation_patience"),
    "bayesian_prediction": ("gp_forecast",),
    "attention_analysis": ("attention",),
}


@dataclass(frozen=True)
class DetectorParams:
    """Knobs of the detectors that the YAML config does not expose (defaults are the tested ones)."""

    smoothing_alpha: float = 0.3  # EMA weight after a running median of 3
    window: int = 20  # trailing validations for Mann-Kendall
    gp_window: int = 30  # trailing validations the GP sees
    horizon: int | None = None  # validations to look ahead; None: adaptive_patience.max_patience
    min_validations: int = 8  # warm-up: no stop before this many validations
    alpha: float = 0.05  # significance of the trend tests
    cusum_h: float = 5.0  # CUSUM alarm threshold (in noise sigmas)
    divergence_factor: float = 2.0  # x the best loss, for
    divergence_consecutive: int = 3  # validations in a row
    # ... and before the alignment has formed (its robust peak below alignment_threshold): teacher-forced
    # val_loss swings 2-2.6x for a few validations while the attention reorganises (two recorded demo runs)
    divergence_factor_unaligned: float = 3.0
    collapse_margin: float = 0.15  # recorded runs wobble 0.1-0.15 below their peak and recover
    collapse_consecutive: int = 2
    firm_margin: float = 0.05  # robust peak >= threshold + this: a firm alignment, collapse after collapse_consecutive
    barely_formed_consecutive: int = 10  # ... else (barely formed) the dip must last this many validations
    alignment_deadline_epochs: float | None = None  # None: end of the warmup stage
    flatline_score: float = 0.1  # attention scoring below this for flatline_validations in a row ...
    flatline_validations: int = 8  # ... and not rising is never going to align (pruned before the deadline)
    # past the deadline, a run whose robust peak once reached the marginal band and whose loss made a new
    # best (by min_delta) within this many validations is still learning, not failing: it gets the grace,
    # climbing or not (it needs 2x this many validations logged); None: off
    improving_window: int | None = 10
    stop_threshold: float = 0.7  # weighted vote needed to stop (prune vetoes do not vote)
    # the attention group votes once aligned: 0 holding at the threshold, stop_threshold holding this much above it
    attention_vote_span: float = 0.05
    train_progress_floor: float | None = 0.05  # no stop (overfitting included) while train_loss falls >= this per horizon; None: off
    lr_annealing_drop: float | None = 0.2  # no plateau stop while the learning rate fell >= this over `window`; None: off
    lr_annealing_min_fraction: float = 0.05  # ... unless it is below this fraction of its peak (spent)
    gp_std_inflation: float = 2.0  # widen the GP's forecast std (its 95% band covered ~80% on test curves)
    min_delta: float | None = None  # relative; None: tuner_min_delta
    gp_cache_size: int = 64
    gp_refit_every: int = 4  # re-optimise GP hyperparameters every this many fits (else reuse)
    log_size: int = 200  # decisions kept in state_dict

    def __post_init__(self) -> None:
        checks = {
            "smoothing_alpha": 0 < self.smoothing_alpha <= 1, "window": self.window >= 6,
            "gp_window": self.gp_window >= 6, "min_validations": self.min_validations >= 1,
            "gp_refit_every": self.gp_refit_every >= 1,
            "alpha": 0 < self.alpha < 1, "cusum_h": self.cusum_h > 0,
            "divergence_factor": self.divergence_factor > 1,
            "divergence_factor_unaligned": self.divergence_factor_unaligned >= self.divergence_factor,
            "stop_threshold": 0 < self.stop_threshold <= 1, "gp_std_inflation": self.gp_std_inflation >= 1,
            "horizon": self.horizon is None or self.horizon >= 1,
            "min_delta": self.min_delta is None or self.min_delta >= 0,
            "collapse_margin": 0 <= self.collapse_margin < 1, "collapse_consecutive": self.collapse_consecutive >= 1,
            "firm_margin": 0 <= self.firm_margin < 1,
            "barely_formed_consecutive": self.barely_formed_consecutive >= self.collapse_consecutive,
            "train_progress_floor": self.train_progress_floor is None or self.train_progress_floor > 0,
            "lr_annealing_drop": self.lr_annealing_drop is None or 0 < self.lr_annealing_drop < 1,
            "lr_annealing_min_fraction": 0 <= self.lr_annealing_min_fraction < 1,
            "flatline_score": 0 <= self.flatline_score <= 1, "flatline_validations": self.flatline_validations >= 3,
            "improving_window": self.improving_window is None or self.improving_window >= 1,
            "attention_vote_span": self.attention_vote_span > 0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(f"DetectorParams: invalid {bad[0]}={getattr(self, bad[0])!r}")


@dataclass(frozen=True)
class Decision:
    level: Literal["trial", "study"]
    action: Action
    reason: Reason
    score: float  # weighted vote in [0, 1]; 1 = all voting evidence says end the run
    confidence: float  # confidence in *this* action
    message: str
    verdicts: tuple[DetectorResult, ...]
    groups: Mapping[str, float | None] = field(default_factory=dict)
    n_points: int = 0
    elapsed_ms: float = 0.0

    @property
    def should_end(self) -> bool:
        return self.action is not Action.CONTINUE

    def verdict(self, name: str) -> DetectorResult | None:
        return next((v for v in self.verdicts if v.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level, "action": self.action.value, "reason": self.reason.value,
            "score": jsonable(self.score), "confidence": jsonable(self.confidence),
            "message": self.message, "groups": jsonable(dict(self.groups)),
            "n_points": self.n_points, "elapsed_ms": jsonable(self.elapsed_ms),
            "verdicts": [v.to_dict() for v in self.verdicts],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=False, sort_keys=True)

    def to_tags(self) -> dict[str, str]:
        """Short MLflow tags (``early_stop.<level>.*``; values are strings, < 5000 chars)."""
        tag = functools.partial(early_stop_tag, self.level)
        tags = {tag("action"): self.action.value, tag("reason"): self.reason.value,
                tag("score"): f"{self.score:.3f}", tag("message"): self.message[:4000]}
        for v in self.verdicts:
            tags[tag(v.name)] = f"{v.action.value}:{v.reason.value}:{v.score:.2f}"
        return tags


def vote(verdicts: Sequence[DetectorResult], weights: Mapping[str, float]) -> tuple[float, dict[str, float | None]]:
    """Weighted mean of the group scores over groups with a voting member and a weight > 0."""
    groups: dict[str, float | None] = {}
    for group, names in GROUPS.items():
        scores = [v.score for v in verdicts if v.name in names and v.voting]
        groups[group] = float(np.mean(scores)) if scores else None
    total = sum(weights[g] for g, s in groups.items() if s is not None)
    if total <= 0:
        return 0.0, groups
    return sum(weights[g] * s for g, s in groups.items() if s is not None) / total, groups
