"""Curves and weights compared, and the verdict: tables of synthetic curves (no I/O)."""

from __future__ import annotations

import math

import pytest
import torch

from ttsops.reproduce.compare import (
    DEFAULT_RTOL,
    compare_curves,
    compare_metric,
    compare_weights,
    side_by_side,
    verdict,
)

NAN = float("nan")


@pytest.mark.parametrize(
    ("a", "b", "up_to", "points", "max_abs", "at", "identical"),
    [
        ({3: 1.0, 6: 0.5}, {3: 1.0, 6: 0.5}, None, 2, 0.0, 3, True),
        ({3: 1.0, 6: 0.5}, {3: 1.0, 6: 0.25}, None, 2, 0.25, 6, False),
        ({3: 1.0, 6: 0.5}, {3: 1.0, 6: 0.25}, 3, 1, 0.0, 3, True),  # compared only up to step 3
        ({3: NAN}, {3: NAN}, None, 1, 0.0, 3, True),  # both NaN: the same record
        ({3: 1.0}, {3: NAN}, None, 1, math.inf, 3, False),
        ({3: 1.0, 6: 0.5}, {3: 1.0}, None, 1, 0.0, 3, False),  # a step missing on one side
        ({}, {}, None, 0, 0.0, None, False),
    ],
)
def test_compare_metric_table(a, b, up_to, points, max_abs, at, identical):
    d = compare_metric("val_loss", a, b, up_to)
    assert (d.points, d.max_abs, d.at_step, d.identical) == (points, max_abs, at, identical)


def test_relative_difference_and_the_steps_only_one_side_logged():
    d = compare_metric("val_loss", {1: 2.0, 2: 4.0, 3: 1.0}, {1: 2.0, 2: 4.004, 4: 1.0})
    assert d.max_rel == pytest.approx(1e-3) and d.at_step == 2
    assert (d.only_original, d.only_reproduced) == ((3,), (4,))


def test_cpu_time_start_up_timings_and_the_tuners_metrics_are_not_compared():
    names = [d.name for d in compare_curves({"val_loss": {1: 1.0}, "cpu_minutes": {1: 1.0}, "objective": {1: 2.0},
                                             "startup_s": {1: 9.0}, "startup_imports_s": {1: 3.0}},
                                            {"val_loss": {1: 1.0}, "cpu_minutes": {1: 3.0}, "startup_s": {1: 7.0}})]
    assert names == ["val_loss"]


def test_side_by_side_lists_every_step_either_run_logged():
    assert side_by_side({1: 1.0, 2: 2.0}, {2: 2.5, 3: 3.0}) == [(1, 1.0, None), (2, 2.0, 2.5), (3, None, 3.0)]
    assert side_by_side({1: 1.0, 2: 2.0}, {2: 2.5, 3: 3.0}, up_to_step=2) == [(1, 1.0, None), (2, 2.0, 2.5)]


@pytest.mark.parametrize(
    ("orig", "repro", "weights", "label", "fragment"),
    [
        ({"val_loss": {3: 1.0}}, {"val_loss": {3: 1.0}}, True, "identical", "bit-identical final weights"),
        ({"val_loss": {3: 1.0}}, {"val_loss": {3: 1.0}}, None, "identical", "every metric identical"),
        ({"val_loss": {3: 1.0}}, {"val_loss": {3: 1.0}}, False, "within tolerance", "largest difference 0"),
        ({"val_loss": {3: 1.0}}, {"val_loss": {3: 1.0 + DEFAULT_RTOL / 2}}, None, "within tolerance", "at step 3"),
        ({"val_loss": {3: 1.0}}, {"val_loss": {3: 1.0 + 2 * DEFAULT_RTOL}}, None, "differs", "more than the tolerance"),
        ({"val_loss": {3: 1.0, 6: 1.0}}, {"val_loss": {3: 1.0}}, None, "differs", "only original: [6]"),
        ({"train_loss": {1: 1.0}}, {"train_loss": {1: 1.0}}, None, "identical", ""),  # too short to validate
        ({"mcd": {1: 1.0}}, {"mcd": {1: 1.0}}, None, "differs", "no val_loss or train_loss"),
        ({"val_loss": {3: 1.0}, "pesq": {3: 2.0}}, {"val_loss": {3: 1.0}, "pesq": {3: 2.5}}, None,
         "within tolerance", "val_loss within"),  # only the key metric's curve decides the tolerance
    ],
)
def test_verdict_table(orig, repro, weights, label, fragment):
    v = verdict(compare_curves(orig, repro), DEFAULT_RTOL, weights)
    assert v.label == label and fragment in v.reason, v
    assert v.ok == (label != "differs")


def test_compare_weights_names_the_worst_tensor_and_shape_mismatches():
    a = {"w": torch.zeros(3), "b": torch.ones(2), "s": torch.zeros(2, 2), "n": torch.tensor(3)}
    assert compare_weights(a, {k: v.clone() for k, v in a.items()}).identical
    b = {"w": torch.tensor([0.0, 0.5, 0.0]), "b": torch.tensor([1.0, 1.25]), "s": torch.zeros(4), "n": torch.tensor(4)}
    d = compare_weights(a, b)
    assert (d.differing, d.worst, d.mismatched) == (3, "n", ("s",))
    assert d.max_abs == math.inf  # an integer tensor (a step counter) that differs
    d = compare_weights({"w": a["w"]}, {"w": b["w"], "extra": torch.zeros(1)})
    assert (d.max_abs, d.worst, d.mismatched, d.identical) == (0.5, "w", ("extra",), False)
