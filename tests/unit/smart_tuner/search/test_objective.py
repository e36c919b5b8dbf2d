"""The composite objective: tables of inputs and expected values; monotone in every metric."""

from __future__ import annotations

import math

import pytest

from ttsops.smart_tuner.search.objective import (
    DEFAULT_WEIGHTS,
    MCD_WORST_DB,
    ObjectiveWeights,
    objective,
    objective_terms,
)

GOOD = {"val_loss": 0.5, "attention_alignment_score": 0.9, "mcd": 5.0, "stoi": 0.9, "pesq": 3.0}
AUDIO_GOOD = 0.02 * 5.0 + 0.5 * 0.1 + 0.1 * 1.5 / 3.5  # mcd + stoi + pesq terms of GOOD


@pytest.mark.parametrize(
    ("metrics", "expected"),
    [
        (GOOD, 0.5 + AUDIO_GOOD),
        ({**GOOD, "attention_alignment_score": 0.8}, 0.5 + AUDIO_GOOD),  # at threshold: no penalty
        ({**GOOD, "attention_alignment_score": 0.5}, 0.5 + 0.3 + AUDIO_GOOD),
        ({**GOOD, "attention_alignment_score": -1.0}, 0.5 + 0.8 + AUDIO_GOOD),  # clipped to 0
        ({**GOOD, "stoi": 1.0, "pesq": 4.5, "mcd": 0.0}, 0.5),  # perfect audio: val_loss only
        ({**GOOD, "stoi": 1.7, "pesq": 9.0, "mcd": -3.0}, 0.5),  # out-of-range values clipped
        ({"val_loss": 0.5, "attention_alignment_score": 1.0, "mcd": 0.0, "stoi": 1.0}, 0.5 + 0.1),
        # missing / NaN secondary metrics cost their worst case
        ({"val_loss": 0.5}, 0.5 + 0.8 + 0.02 * MCD_WORST_DB + 0.5 + 0.1),
        ({**GOOD, "pesq": math.nan}, 0.5 + 0.02 * 5.0 + 0.05 + 0.1),
        ({**GOOD, "mcd": math.inf}, 0.5 + 0.02 * MCD_WORST_DB + 0.05 + 0.1 * 1.5 / 3.5),
        # no usable val_loss: the generation is unusable
        ({**GOOD, "val_loss": math.nan}, math.inf),
        ({**GOOD, "val_loss": math.inf}, math.inf),
        ({k: v for k, v in GOOD.items() if k != "val_loss"}, math.inf),
    ],
)
def test_objective_table(metrics, expected):
    assert objective(metrics) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("metric", "worse", "better"),
    [
        ("val_loss", 0.6, 0.5),
        ("attention_alignment_score", 0.3, 0.6),
        ("mcd", 9.0, 6.0),
        ("stoi", 0.7, 0.8),
        ("pesq", 2.0, 2.5),
    ],
)
def test_monotone_in_each_metric(metric, worse, better):
    base = {**GOOD, "attention_alignment_score": 0.4}
    assert objective({**base, metric: worse}) > objective({**base, metric: better})


@pytest.mark.parametrize("metric", ["attention_alignment_score", "mcd", "stoi", "pesq"])
def test_missing_is_never_better_than_measured(metric):
    measured_bad = {
        **GOOD,
        metric: {"attention_alignment_score": 0.0, "mcd": MCD_WORST_DB, "stoi": 0.0, "pesq": 1.0}[metric],
    }
    missing = {k: v for k, v in GOOD.items() if k != metric}
    assert objective(missing) == pytest.approx(objective(measured_bad))


def test_alignment_above_threshold_does_not_count():
    assert objective({**GOOD, "attention_alignment_score": 0.81}) == objective(
        {**GOOD, "attention_alignment_score": 0.99}
    )


def test_terms_sum_to_objective_and_weights_apply():
    w = ObjectiveWeights(alignment=2.0, alignment_threshold=0.9, mcd=0.0, stoi=0.0, pesq=0.0)
    terms = objective_terms({**GOOD, "attention_alignment_score": 0.7}, w)
    assert terms == pytest.approx({"val_loss": 0.5, "alignment": 0.4, "mcd": 0.0, "stoi": 0.0, "pesq": 0.0})
    assert objective({**GOOD, "attention_alignment_score": 0.7}, w) == pytest.approx(0.9)
    assert DEFAULT_WEIGHTS.alignment_threshold == 0.8


@pytest.mark.parametrize(
    "kwargs", [{"mcd": -1.0}, {"stoi": math.nan}, {"alignment_threshold": 1.5}, {"pesq": math.inf}]
)
def test_bad_weights_are_refused(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        ObjectiveWeights(**kwargs)
