"""How a reproduction compares with the run it reproduces: metric curves step by step, weights
tensor by tensor, and one verdict. No I/O.

The verdict is ``identical`` when every compared metric has the same value at the same steps and
the final weights are bit-identical (when known); ``within tolerance`` when the curve of the key
metric (``val_loss``, or ``train_loss`` for a rerun too short to validate) stays within ``rtol``
of the original at every step both logged; else ``differs``.

``DEFAULT_RTOL``: measured on CPU with configs/tiny.yaml, the same run with 1 and 2 threads
differs by at most 2.6e-5 (relative) in ``val_loss`` after 3 and after 10 epochs; the default
leaves room for longer runs and other CPUs (docs/train_contract.md, "Reproducibility", says why
the curves differ at all, and why PESQ is reported but not judged).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

DEFAULT_RTOL = 1e-3
KEY_METRICS = ("val_loss", "train_loss")
# not compared: not results of training
IGNORED = {
    "cpu_minutes": "CPU time, not a result",
    "objective": "the tuner's, not train.py's",
    "tuner_epoch": "the tuner's, not train.py's",
}
IGNORED_PREFIXES = ("startup_",)  # train.py's start-up timings (startup_s, startup_<phase>_s): wall time


def ignored(name: str) -> bool:
    return name in IGNORED or name.startswith(IGNORED_PREFIXES)


@dataclass(frozen=True)
class MetricDiff:
    name: str
    points: int  # steps both logged
    max_abs: float  # inf where one side is NaN and the other not
    max_rel: float
    at_step: int | None  # where max_abs is
    only_original: tuple[int, ...] = ()
    only_reproduced: tuple[int, ...] = ()

    @property
    def identical(self) -> bool:
        return self.points > 0 and self.max_abs == 0.0 and not self.only_original and not self.only_reproduced


@dataclass(frozen=True)
class WeightsDiff:
    tensors: int
    differing: int
    max_abs: float
    worst: str | None  # the tensor with the largest difference
    mismatched: tuple[str, ...] = ()  # missing on one side or of another shape

    @property
    def identical(self) -> bool:
        return self.differing == 0 and not self.mismatched


@dataclass(frozen=True)
class Verdict:
    label: str  # identical | within tolerance | differs
    reason: str

    @property
    def ok(self) -> bool:
        return self.label != "differs"


def _diff(a: float, b: float) -> tuple[float, float]:
    if math.isnan(a) and math.isnan(b):
        return 0.0, 0.0
    if math.isnan(a) or math.isnan(b) or math.isinf(a) or math.isinf(b):
        return (0.0, 0.0) if a == b else (math.inf, math.inf)
    d = abs(a - b)
    return d, d / abs(a) if a else (0.0 if d == 0 else math.inf)


def compare_metric(name: str, original: Mapping[int, float], reproduced: Mapping[int, float],
                   up_to_step: int | None = None) -> MetricDiff:
    a = {s: v for s, v in original.items() if up_to_step is None or s <= up_to_step}
    b = {s: v for s, v in reproduced.items() if up_to_step is None or s <= up_to_step}
    common = sorted(set(a) & set(b))
    max_abs, max_rel, at = 0.0, 0.0, None
    for step in common:
        d, r = _diff(a[step], b[step])
        if at is None or d > max_abs:
            max_abs, at = d, step
        max_rel = max(max_rel, r)
    return MetricDiff(name, len(common), max_abs, max_rel, at,
                      tuple(sorted(set(a) - set(b))), tuple(sorted(set(b) - set(a))))


def compare_curves(original: Mapping[str, Mapping[int, float]], reproduced: Mapping[str, Mapping[int, float]],
                   up_to_step: int | None = None) -> list[MetricDiff]:
    """One MetricDiff per metric either side logged (``IGNORED`` ones left out), sorted by name."""
    names = sorted(n for n in set(original) | set(reproduced) if not ignored(n))
    return [compare_metric(n, original.get(n, {}), reproduced.get(n, {}), up_to_step) for n in names]


def side_by_side(original: Mapping[int, float], reproduced: Mapping[int, float],
                 up_to_step: int | None = None) -> list[tuple[int, float | None, float | None]]:
    """``(step, original, reproduced)`` for every step either logged (None where one did not)."""
    steps = sorted(s for s in set(original) | set(reproduced) if up_to_step is None or s <= up_to_step)
    return [(s, original.get(s), reproduced.get(s)) for s in steps]


def compare_weights(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> WeightsDiff:
    mismatched = sorted({k for k in set(a) ^ set(b)} | {k for k in set(a) & set(b) if a[k].shape != b[k].shape})
    differing, max_abs, worst = 0, 0.0, None
    for k in sorted(set(a) & set(b) - set(mismatched)):
        if torch.equal(a[k], b[k]):
            continue
        differing += 1
        d = float((a[k].double() - b[k].double()).abs().max()) if a[k].is_floating_point() else math.inf
        if worst is None or d > max_abs:
            max_abs, worst = d, k
    return WeightsDiff(len(set(a) | set(b)), differing, max_abs, worst, tuple(mismatched))


def verdict(diffs: list[MetricDiff], rtol: float = DEFAULT_RTOL, weights_identical: bool | None = None) -> Verdict:
    by_name = {d.name: d for d in diffs}
    key = next((by_name[k] for k in KEY_METRICS if k in by_name and by_name[k].points), None)
    if key is None:
        return Verdict("differs", f"no {' or '.join(KEY_METRICS)} logged at the same steps by both runs")
    if all(d.identical for d in diffs) and weights_identical is not False:
        weights = "" if weights_identical is None else " and bit-identical final weights"
        return Verdict("identical", f"every metric identical at every step{weights}")
    gaps = key.only_original or key.only_reproduced
    if gaps:
        return Verdict("differs", f"{key.name} logged at other steps (only original: {list(key.only_original)}, "
                                  f"only reproduced: {list(key.only_reproduced)})")
    if key.max_rel <= rtol:
        return Verdict("within tolerance", f"{key.name} within {rtol:g} (relative) at all {key.points} steps; "
                                           f"largest difference {key.max_rel:.3g} at step {key.at_step}")
    return Verdict("differs", f"{key.name} differs by {key.max_rel:.3g} (relative) at step {key.at_step}, "
                              f"more than the tolerance {rtol:g}")
