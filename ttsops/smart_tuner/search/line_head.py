"""Where the next continuation starts: the line's head, not always the best checkpoint.

The tuner warm-starts every generation from a checkpoint of the line. It used to be the best one
(``best_model.pt``), and the best is the lowest of many noisy validations. Measured on 80 clips at 4
CPU-minutes (benchmarks/README.md, tuner against baselines): after a lucky 3.04 every one of six
continuations (their levels 3.2-3.5, each 24-42 steps further on) lost its steps and the next one
started from the same step again, so the line stood still for the rest of the budget while one
continuous run went on from 3.4 to 2.8.

Now a completed continuation that carries the line on becomes the **head**, and the next one starts
from the head's **newest** checkpoint, where it stopped, as one continuous run would: a generation's
kept checkpoint is its best validation, often its first or second of 4-7 (measured at 10
CPU-minutes, 80 clips: from 4 to 10 CPU-minutes such a line went from 2.95 to 2.73 while one run of
the default config went from 2.75 to 2.06). It carries the line on when its level at its end (``warm_line.end_level``) is within the
warm-line margin of the line: of the lower of the level it was judged against and the best
generation's level (``line_level`` at its kept validation), so the head cannot drift upwards by one
margin per generation (measured: 3.00 to 3.12 over ten continuations, each within the margin of the
one before). A new best that does not carry the line on at its end becomes the head at its kept
checkpoint, ``best_model.pt``. The next continuation is judged against the head's level; the champion
(``best_model.pt``, the registry, the study's best) is still chosen by the objective. The head is a
study attribute (``HEAD_ATTR``: generation, checkpoint, level), so every worker of a shared study
continues the same line. Without ``optimization.warm_prune_sigmas`` (no margin) or a known validation
noise, only a new best moves it, at its kept checkpoint.

A greedy line cannot cross a hump of its own objective that one continuous run crosses: with the
search space pinned to the default point, a continuation from step 90 (level 3.10) rose to 3.4-3.85
while its alignment formed, as the continuous default run does at that step, and was rejected 24
times in a row (benchmarks/README.md, seventh run). So after ``optimization.line_patience``
continuations in a row finished without moving the head (pruned, or completed short of the line),
the next one is a **carry-on** (``CARRY_ON_ATTR``): the head's own hparams, so its plan is an exact
resume (weights, optimizer, schedule, epoch), not judged by value (only the in-trial failure rules:
never aligned, divergence, collapse) and, completed, it becomes the head at its newest checkpoint
wherever it ends. The line then always moves on within ``line_patience`` + 1 generations.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from ttsops.errors import TunerError
from ttsops.registry.model_registry import BestRecord
from ttsops.smart_tuner.search.warm_line import (
    CARRY_ON_ATTR,
    HEAD_ATTR,
    LEVEL_PREFIX,
    REFERENCE_ATTR,
    end_level,
    keeps_the_line,
    line_level,
    validation_noise,
)
from ttsops.smart_tuner.study import history

logger = logging.getLogger(__name__)
CARRIED_ON = "but the search stalled, not the line: it carries on as one run first (a carry-on)"
BACK_ATTR = "ttsops.line_back_to"  # study attr: the best a stall last sent the head back to (once per best)


@dataclasses.dataclass(frozen=True)
class LineSource:
    record: BestRecord  # the registry's best, or the head described as one (its generation, value, hparams)
    path: Path  # the checkpoint to start from
    is_head: bool  # not best_model.pt: a continuation's checkpoint
    level: float | None = None  # the line's level there (None: judge against the best's curve)


class LineHead:
    """Chooses and moves the line's head (see the module doc)."""

    def __init__(self, engine: Any, registry: Any, merged_hparams: Any, sigmas: float | None,
                 patience: int | None = None) -> None:
        self.engine, self.registry, self._merged, self.sigmas = engine, registry, merged_hparams, sigmas
        self.patience = patience  # optimization.line_patience

    def source(self) -> LineSource | None:
        """The head, when it is a completed generation of this study whose checkpoint is still there
        and the best is this study's own (a best pulled from another line wins); else the best."""
        best = self.registry.best()
        if best is None:
            return None
        fallback = LineSource(best, self.registry.best_path, False)
        head = self.head()
        if head is None or best.pulled_from is not None:
            return fallback
        n, ckpt = int(head["generation"]), head.get("checkpoint")
        if n == best.generation and not ckpt:  # the best at its kept checkpoint: best_model.pt
            return dataclasses.replace(fallback, level=head.get("level"))
        try:
            t = self.engine.frozen(n)
        except TunerError:
            return fallback
        ckpt = ckpt or t.user_attrs.get(history.CKPT_ATTR)
        if t.state != TrialState.COMPLETE or t.value is None or not ckpt or not Path(ckpt).is_file():
            return fallback
        record = dataclasses.replace(
            best, generation=t.number, objective=float(t.value), source=str(ckpt), run_id=t.user_attrs.get(
                history.RUN_ID_ATTR), version=None, promoted=False, params=dict(t.params),
            hparams=self._merged(dict(t.params)), metrics=dict(t.user_attrs.get(history.METRICS_ATTR) or {}),
        )
        return LineSource(record, Path(ckpt), True, head.get("level"))

    def head(self) -> dict[str, Any] | None:
        """``HEAD_ATTR``: ``{"generation", "checkpoint" (None: its kept one), "level"}``; a study from
        before the newest checkpoint was handed on holds the generation's number alone."""
        raw = self.engine.study.user_attrs.get(HEAD_ATTR)
        return None if raw is None else dict(raw) if isinstance(raw, dict) else {"generation": int(raw)}

    def advance(self, number: int, newest: Path | None = None) -> bool:
        """After generation ``number`` completed (and was registered), with ``newest`` its newest
        checkpoint: it becomes the head at that checkpoint when its end carries the line on, else at
        its kept checkpoint when it is the new best. Returns whether it moved the head. The head's
        level after it is recorded either way (``levels``: the study-level stop reads the line)."""
        moved = self._move(number, newest)
        head = self.head()
        if head is not None and head.get("level") is not None:
            self.engine.study.set_user_attr(f"{LEVEL_PREFIX}{number}", float(head["level"]))
        return moved

    def rejections(self) -> list[Any]:
        """Continuations finished (completed or pruned) since the head last moved, in order: those
        numbered after the head's generation that started from a checkpoint; none of them moved it."""
        head = self.head()
        if head is None:
            return []
        done = self.engine.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        return [t for t in done if t.number > int(head["generation"])
                and (t.user_attrs.get(history.PLAN_ATTR) or {}).get("mode") in ("resume", "warm_start")]

    def queue_carry_on(self) -> dict[str, Any] | None:
        """After ``patience`` rejections in a row, queue the line's source's own params as the next
        trial, a carry-on (unless one is queued or running already, or the last rejection was one: a
        carry-on an in-trial rule stopped would be replayed); returns the params queued."""
        rejected = self.rejections()
        if (self.patience is None or len(rejected) < self.patience or rejected[-1].user_attrs.get(CARRY_ON_ATTR)
                or self._pending()):
            return None
        logger.info("the line was not carried on %d times in a row: its source resumes as one run", len(rejected))
        return self._enqueue()

    def _enqueue(self) -> dict[str, Any] | None:
        """Queue a carry-on: the line's source's own params (None: no source yet)."""
        if (src := self.source()) is None:
            return None
        params = dict(src.record.params)
        self.engine.study.enqueue_trial(params, user_attrs={CARRY_ON_ATTR: True}, skip_if_exists=False)
        return params

    def carry_on_before_end(self, completed: list[int], n: int) -> bool:
        """The study-level stop says the search stalled: unless the last ``n`` of these completed
        generations were carry-ons already (the line as one run stalled too), a carry-on is queued
        (or already pending) and the study goes on. False without carry-ons (``patience`` None)."""
        if self.patience is None or not completed:
            return False
        attrs = [self.engine.frozen(k).user_attrs for k in completed[-n:]]
        if len(attrs) == n and all(a.get(CARRY_ON_ATTR) for a in attrs):
            return False
        if self._pending():
            return True
        self._back_to_best()
        return self._enqueue() is not None

    def _back_to_best(self) -> None:
        """At a stall, a head clearly worse than the best generation's level (past the warm-line
        margin) goes back to the best at its kept checkpoint: the study's last carry-ons train the
        champion on, not a line a bad continuation had moved (measured: three carry-ons of a head
        at 3.04-3.22 ended a study whose best was 2.87). Once per best (``BACK_ATTR``): the line
        from it has been carried on since, and going back again would replay the same exact resume
        (measured: three identical carry-ons from ``best_model.pt`` ended a study at 62% of its budget)."""
        best, head, level = self.registry.best(), self.head(), self._best_level()
        if best is None or head is None or level is None or best.pulled_from is not None or \
                self.engine.study.user_attrs.get(BACK_ATTR) == best.generation:
            return
        noise = validation_noise(self.engine.study.get_trials(deepcopy=False)) or 0.0
        if int(head["generation"]) == best.generation or head.get("level") is None or self._within(
                float(head["level"]), level, noise):
            return
        logger.info("the line's head (generation %s, level %.4g) goes back to the best, generation %d (level %.4g)",
                    head["generation"], float(head["level"]), best.generation, level)
        self.engine.study.set_user_attr(HEAD_ATTR, {"generation": best.generation, "checkpoint": None, "level": level})
        self.engine.study.set_user_attr(BACK_ATTR, best.generation)

    def _pending(self) -> bool:
        """A carry-on is queued or running already (by this worker or another)."""
        pending = self.engine.study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))
        return any(t.user_attrs.get(CARRY_ON_ATTR) for t in pending)

    def levels(self, numbers: list[int]) -> list[float]:
        """The head's level after each of these generations (NaN where none was recorded)."""
        attrs = self.engine.study.user_attrs
        return [float(attrs.get(f"{LEVEL_PREFIX}{n}", math.nan)) for n in numbers]

    def _move(self, number: int, newest: Path | None) -> bool:
        t = self.engine.frozen(number)
        if t.state != TrialState.COMPLETE or t.value is None:
            return False
        values = [v for _, v in sorted(t.intermediate_values.items())]
        level = end_level(values)
        carried = bool(t.user_attrs.get(CARRY_ON_ATTR))  # the line itself, wherever it ends
        if newest is not None and Path(newest).is_file() and level is not None and (
                carried or self._keeps(t, level, values[-1])):
            self.engine.study.set_user_attr(HEAD_ATTR, {"generation": number, "checkpoint": str(newest), "level": level})
            return True
        best = self.registry.best()
        if best is not None and best.generation == number and best.pulled_from is None:
            kept = line_level(values, float(t.value))
            self.engine.study.set_user_attr(HEAD_ATTR, {"generation": number, "checkpoint": None, "level": kept})
            return True
        return False

    def _keeps(self, t: Any, level: float, last: float) -> bool:
        """Its level at the end and its last validation itself (the weights handed on) both within
        the margin of the line (a robust level alone passed a last validation of 3.80 after 3.30)."""
        if self.sigmas is None:
            return False
        noise = validation_noise(self.engine.study.get_trials(deepcopy=False))
        if noise is None:
            return False
        refs = [float(r) for r in (t.user_attrs.get(REFERENCE_ATTR), self._best_level()) if r is not None]
        if not refs:
            return False
        reference = max(refs) if self.engine.direction == "maximize" else min(refs)
        return all(self._within(v, reference, noise) for v in (level, last))

    def _within(self, level: float, reference: float, noise: float) -> bool:
        """``level`` no worse than ``reference`` by more than the warm-line margin (warm_line.keeps_the_line)."""
        return keeps_the_line(level, reference, noise, sigmas=float(self.sigmas or 0),
                              maximize=self.engine.direction == "maximize")

    def _best_level(self) -> float | None:
        """The best generation's level at its kept validation (its objective when pulled from elsewhere)."""
        best = self.registry.best()
        if best is None:
            return None
        try:
            curve = self.engine.frozen(best.generation).intermediate_values if best.pulled_from is None else {}
        except TunerError:
            curve = {}
        return line_level([v for _, v in sorted(curve.items())], best.objective)
