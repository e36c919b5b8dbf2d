"""The composite objective: tables of inputs and expected values; monotone in every metric."""

from __future__ import annotations

import math

import pytest

from ttsops.smart_tuner.search.objective import (
    DEFAULT_WEIGHTS,
    FREE_RUNNING_WORST,
    MCD_WORST_DB,
    ObjectiveWeights,
    objective,
    objective_terms,
)

GOOD = {"val_loss": 2.5, "attention_alignment_score": 0.9, "mcd": 5.0, "stoi": 0.9, "pesq": 3.0, "asr_wer": 0.25,
        "free_running_distance": 0.4}
AUDIO_GOOD = 0.02 * 5.0 + 0.5 * 0.1 + 0.1 * 1.5 / 3.5 + 1.0 * 0.25  # mcd + stoi + pesq + asr_wer terms of GOOD


@pytest.mark.parametrize(
    ("metrics", "expected"),
    [
        (GOOD, 0.5 + AUDIO_GOOD),
        ({**GOOD, "attention_alignment_score": 0.8}, 0.5 + AUDIO_GOOD),  # at threshold: no penalty
        ({**GOOD, "attention_alignment_score": 0.5}, 0.5 + 0.3 + AUDIO_GOOD),
        ({**GOOD, "attention_alignment_score": -1.0}, 0.5 + 0.8 + AUDIO_GOOD),  # clipped to 0
        ({**GOOD, "stoi": 1.0, "pesq": 4.5, "mcd": 0.0, "asr_wer": 0.0}, 0.5),  # perfect audio: val_loss only
        ({**GOOD, "stoi": 1.7, "pesq": 9.0, "mcd": -3.0, "asr_wer": -0.2}, 0.5),  # out-of-range values clipped
        ({"val_loss": 2.5, "attention_alignment_score": 1.0, "mcd": 0.0, "stoi": 1.0, "asr_wer": 0.0}, 0.5 + 0.1),
        ({**GOOD, "asr_wer": 1.7}, 0.5 + AUDIO_GOOD - 0.25 + 1.0),  # WER above 1 (insertions) counts as 1
        # missing / NaN secondary metrics cost their worst case
        ({"val_loss": 2.5}, 0.5 + 0.8 + 0.02 * MCD_WORST_DB + 0.5 + 0.1 + 1.0),
        ({**GOOD, "pesq": math.nan}, 0.5 + 0.02 * 5.0 + 0.05 + 0.1 + 0.25),
        ({**GOOD, "mcd": math.inf}, 0.5 + 0.02 * MCD_WORST_DB + 0.05 + 0.1 * 1.5 / 3.5 + 0.25),
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
        ("val_loss", 3.0, 2.5),
        ("attention_alignment_score", 0.3, 0.6),
        ("mcd", 9.0, 6.0),
        ("stoi", 0.7, 0.8),
        ("pesq", 2.0, 2.5),
        ("asr_wer", 0.6, 0.4),
    ],
)
def test_monotone_in_each_metric(metric, worse, better):
    base = {**GOOD, "attention_alignment_score": 0.4}
    assert objective({**base, metric: worse}) > objective({**base, metric: better})


WORST = {"attention_alignment_score": 0.0, "mcd": MCD_WORST_DB, "stoi": 0.0, "pesq": 1.0, "asr_wer": 1.0,
         "free_running_distance": FREE_RUNNING_WORST}


@pytest.mark.parametrize("metric", list(WORST))
def test_missing_is_never_better_than_measured(metric):
    measured_bad = {**GOOD, metric: WORST[metric]}
    w = ObjectiveWeights(free_running=1.0)
    missing = {k: v for k, v in GOOD.items() if k != metric}
    assert objective(missing, w) == pytest.approx(objective(measured_bad, w))


def test_alignment_above_threshold_does_not_count():
    assert objective({**GOOD, "attention_alignment_score": 0.81}) == objective(
        {**GOOD, "attention_alignment_score": 0.99}
    )


def test_terms_sum_to_objective_and_weights_apply():
    w = ObjectiveWeights(alignment=2.0, alignment_threshold=0.9, mcd=0.0, stoi=0.0, pesq=0.0, asr_wer=0.0,
                         free_running=0.5)
    terms = objective_terms({**GOOD, "attention_alignment_score": 0.7}, w)
    assert terms == pytest.approx({"val_loss": 0.5, "alignment": 0.4, "mcd": 0.0, "stoi": 0.0, "pesq": 0.0,
                                   "asr_wer": 0.0, "free_running": 0.2})
    assert objective({**GOOD, "attention_alignment_score": 0.7}, w) == pytest.approx(1.1)
    assert DEFAULT_WEIGHTS.alignment_threshold == 0.8


@pytest.mark.parametrize(
    "kwargs", [{"mcd": -1.0}, {"stoi": math.nan}, {"alignment_threshold": 1.5}, {"pesq": math.inf},
               {"asr_wer": -2.0}, {"val_loss_scale": 0.0}]
)
def test_bad_weights_are_refused(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        ObjectiveWeights(**kwargs)


def test_the_config_sets_the_weights_and_the_attention_monitor_the_threshold():
    from ttsops.config import load_config
    from ttsops.smart_tuner.search.objective import objective_weights

    cfg = load_config(None, ["objective.asr_wer=0.5", "objective.free_running=0.1",
                             "smart_early_stopping.attention_monitoring.alignment_threshold=0.6"])
    w = objective_weights(cfg)
    assert (w.asr_wer, w.free_running, w.alignment_threshold) == (0.5, 0.1, 0.6)
    assert objective({**GOOD, "attention_alignment_score": 0.7}, w) < objective(
        {**GOOD, "attention_alignment_score": 0.7})  # 0.7 is aligned under the lower threshold


def test_val_loss_scale_sets_what_the_penalties_weigh_against():
    """objective.val_loss_scale (formerly the loss entered unscaled): at the measured loss of a trained
    run (5), an alignment of 0.5 costs as much as a 30% higher loss, as documented; unscaled it cost 6%."""
    from ttsops.config import load_config
    from ttsops.smart_tuner.search.objective import objective_weights

    only_align = {"mcd": 0.0, "stoi": 0.0, "pesq": 0.0, "asr_wer": 0.0}
    aligned_worse_loss = {**GOOD, "val_loss": 6.4, "attention_alignment_score": 0.9}
    unaligned_better_loss = {**GOOD, "val_loss": 5.0, "attention_alignment_score": 0.5}
    scaled = ObjectiveWeights(**only_align)
    unscaled = ObjectiveWeights(val_loss_scale=1.0, **only_align)
    # scaled: 6.4/5 = 1.28 < 5/5 + 0.3: the aligned generation wins, as the docstring's table says
    assert objective(aligned_worse_loss, scaled) < objective(unaligned_better_loss, scaled)
    # unscaled (the old objective): 6.4 > 5.3: the collapsing alignment had the lower objective
    assert objective(aligned_worse_loss, unscaled) > objective(unaligned_better_loss, unscaled)
    assert objective_weights(load_config(None, ["objective.val_loss_scale=1.0"])).val_loss_scale == 1.0
    assert objective(GOOD, objective_weights(load_config(None, ["objective.val_loss_scale=1.0"]))) > objective(GOOD)
