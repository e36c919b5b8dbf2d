"""Where the next continuation starts: the line's head, not always the best checkpoint.

The tuner warm-starts every generation from a checkpoint of the line. It used to be the best one
(``best_model.pt``), and the best is the lowest of many noisy validations. Measured on 80 clips at 4
CPU-minutes (benchmarks/README.md, tuner against baselines): after a lucky 3.04 every one of six
continuations (their levels 3.2-3.5, each 24-42 steps further on) lost its steps and the next one
started from the same step again, so the line stood still for the rest of the budget while one
continuous run went on from 3.4 to 2.8.

Now a completed continuation that carries the line on (``warm_line.keeps_the_line``: its level is
within the warm-line margin of the line it was judged against) becomes the **head**; a new best
becomes the head too. The next continuation starts from the head's kept checkpoint, is judged
against the head's level, and the best stays what ``best_model.pt`` and the registry hold: the
champion is still chosen by the objective, the line just keeps its steps (population-based
training keeps a member that is not clearly worse in the same way). The head is a study attribute
(``HEAD_ATTR``), so every worker of a shared study continues the same line. Without
``optimization.warm_prune_sigmas`` (no margin) or a known validation noise, only a new best moves it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from ttsops.errors import TunerError
from ttsops.registry.model_registry import BestRecord
from ttsops.smart_tuner.search.warm_line import HEAD_ATTR, REFERENCE_ATTR, keeps_the_line, validation_noise
from ttsops.smart_tuner.study import history


@dataclasses.dataclass(frozen=True)
class LineSource:
    record: BestRecord  # the registry's best, or the head described as one (its generation, value, hparams)
    path: Path  # the checkpoint to start from
    is_head: bool  # a continuation that is not the best


class LineHead:
    """Chooses and moves the line's head (see the module doc)."""

    def __init__(self, engine: Any, registry: Any, merged_hparams: Any, sigmas: float | None) -> None:
        self.engine, self.registry, self._merged, self.sigmas = engine, registry, merged_hparams, sigmas

    def source(self) -> LineSource | None:
        """The head, when it is a completed generation of this study whose kept checkpoint is still
        there and the best is this study's own (a best pulled from another line wins); else the best."""
        best = self.registry.best()
        if best is None:
            return None
        fallback = LineSource(best, self.registry.best_path, False)
        head = self.engine.study.user_attrs.get(HEAD_ATTR)
        if head is None or int(head) == best.generation or best.pulled_from is not None:
            return fallback
        try:
            t = self.engine.frozen(int(head))
        except TunerError:
            return fallback
        ckpt = t.user_attrs.get(history.CKPT_ATTR)
        if t.state != TrialState.COMPLETE or t.value is None or not ckpt or not Path(ckpt).is_file():
            return fallback
        record = dataclasses.replace(
            best, generation=t.number, objective=float(t.value), source=str(ckpt), run_id=t.user_attrs.get(
                history.RUN_ID_ATTR), version=None, promoted=False, params=dict(t.params),
            hparams=self._merged(dict(t.params)), metrics=dict(t.user_attrs.get(history.METRICS_ATTR) or {}),
        )
        return LineSource(record, Path(ckpt), True)

    def advance(self, number: int) -> bool:
        """After generation ``number`` completed (and was registered): it becomes the head when it is
        the best or carries the line on. Returns whether it did."""
        best = self.registry.best()
        if (best is not None and best.generation == number and best.pulled_from is None) or self._keeps(number):
            self.engine.study.set_user_attr(HEAD_ATTR, number)
            return True
        return False

    def _keeps(self, number: int) -> bool:
        t = self.engine.frozen(number)
        reference = t.user_attrs.get(REFERENCE_ATTR)
        if self.sigmas is None or reference is None or t.value is None or t.state != TrialState.COMPLETE:
            return False
        noise = validation_noise(self.engine.study.get_trials(deepcopy=False))
        if noise is None:
            return False
        values = [v for _, v in sorted(t.intermediate_values.items())]
        return keeps_the_line(values, float(t.value), float(reference), noise, sigmas=float(self.sigmas),
                              maximize=self.engine.direction == "maximize")
