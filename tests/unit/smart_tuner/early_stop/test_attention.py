"""Attention health: never aligned, collapsed, wobbling, monotonicity."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ttsops.smart_tuner.early_stop.attention import attention_detector, held_alignment
from ttsops.smart_tuner.early_stop.detectors import Action, Reason


def judge(scores, **kw):
    kw.setdefault("epochs", list(range(1, len(scores) + 1)))
    return attention_detector(scores, **kw)


@pytest.mark.parametrize("onset", [15, 22, 31])
def test_collapse_flagged_within_three_validations(onset):
    rng = np.random.default_rng(onset)
    a = np.r_[np.linspace(0.2, 0.9, 8), np.full(onset - 8, 0.9), np.full(10, 0.35)] + 0.02 * rng.standard_normal(onset + 10)
    first = next(t for t in range(1, a.size + 1) if judge(a[:t]).ends_run)
    assert first - 1 - onset <= 3
    r = judge(a[:first])
    assert (r.action, r.reason) == (Action.PRUNE, Reason.ALIGNMENT_COLLAPSED)
    assert abs(r.details["collapse_onset"] - onset) <= 2


def test_wobble_around_threshold_is_not_a_collapse():
    a = [0.3, 0.6, 0.82, 0.85, 0.79, 0.78, 0.83, 0.79, 0.77, 0.81]
    assert all(not judge(a[:t]).ends_run for t in range(1, len(a) + 1))
    # median of the last 5 is 0.79: holding just below the threshold (no plateau stop yet) ...
    assert judge(a).reason is Reason.ALIGNMENT_SETTLING and not judge(a).voting
    up = [v + 0.03 for v in a]  # ... 0.82: aligned
    got = judge(up)  # ... 0.82: aligned, and it votes: settled 40% of the 0.05 firm margin -> 0.4 x 0.7
    assert got.reason is Reason.ALIGNED and got.voting and not got.ends_run
    assert got.score == pytest.approx(0.7 * (0.82 - 0.8) / 0.05)


def test_one_lucky_validation_over_the_threshold_is_not_the_peak():
    # recorded train.py run (train-plateau-lr-decay): touches 0.81 once, holds 0.68-0.78, and went on
    # to its best loss; the old raw-max peak called 0.68 / 0.69 a collapse
    a = [0.10, 0.42, 0.64, 0.72, 0.78, 0.81, 0.76, 0.78, 0.70, 0.68, 0.69, 0.70, 0.75, 0.70, 0.75]
    assert all(not judge(a[:t]).ends_run for t in range(1, len(a) + 1))
    # after a peak that held (0.9, 0.91, 0.9), a fall out of the marginal band is a collapse ...
    b = [0.10, 0.42, 0.64, 0.72, 0.90, 0.91, 0.90, 0.78, 0.62, 0.58, 0.59]
    r = judge(b)
    assert (r.action, r.reason) == (Action.PRUNE, Reason.ALIGNMENT_COLLAPSED)
    assert not judge(b[:9]).ends_run and judge(b[:10]).ends_run  # two in a row below 0.65 and 0.9 - 0.15


def test_a_sag_into_the_marginal_band_is_settling_not_a_collapse():
    # held-out recorded run (train-demo-default-48clips-seed54): peak 0.93, then 0.77-0.78 for two
    # validations while its loss reached a new best; pruned as collapsed when the line was the
    # threshold, it went on to improve by 30%. A marginal alignment is no failure, after a peak either
    a = [0.1, 0.4, 0.8, 0.86, 0.9, 0.93, 0.91, 0.94, 0.87, 0.84, 0.80, 0.79, 0.78, 0.82, 0.77, 0.77, 0.76, 0.83]
    assert all(not judge(a[:t]).ends_run for t in range(1, len(a) + 1))
    assert judge(a[:17]).reason is Reason.ALIGNMENT_SETTLING  # plateau stops wait meanwhile
    assert judge(a[:17] + [0.6, 0.55]).reason is Reason.ALIGNMENT_COLLAPSED  # out of the band: a collapse


def test_one_lucky_validation_does_not_make_a_failing_run_aligned():
    # review finding: reaching the threshold on one raw score made collapse impossible (robust peak
    # 0.62 < 0.8) and skipped the never-aligned rules, so this run could never be pruned
    a = [0.1, 0.3, 0.5, 0.55, 0.6, 0.58, 0.62, 0.81] + [0.6, 0.57, 0.59, 0.56] * 5
    r = judge(a, deadline_epoch=20)
    assert (r.action, r.reason) == (Action.PRUNE, Reason.NEVER_ALIGNED)
    flat = [0.02, 0.03, 0.82] + [0.02] * 10
    r = judge(flat, deadline_epoch=20)
    assert (r.action, r.reason) == (Action.PRUNE, Reason.NEVER_ALIGNED) and "attention flat" in r.message


def test_never_aligned_pruned_at_the_deadline_not_before():
    a = 0.25 + 0.01 * np.sin(np.arange(40))
    before = judge(a[:19], deadline_epoch=20)
    at = judge(a[:20], deadline_epoch=20)
    assert before.reason is Reason.NOT_YET_ALIGNED and not before.ends_run
    assert (at.action, at.reason) == (Action.PRUNE, Reason.NEVER_ALIGNED)


def test_climbing_alignment_gets_grace_past_the_deadline_but_not_forever():
    a = np.minimum(0.1 + 0.04 * np.arange(60), 0.55)  # climbs to 0.55 by validation 12, then stalls
    assert judge(a[:9], deadline_epoch=8).reason is Reason.NOT_YET_ALIGNED  # past the deadline, climbing
    r = judge(a[:30], deadline_epoch=8)
    assert (r.action, r.reason) == (Action.PRUNE, Reason.NEVER_ALIGNED)  # stalled far below 0.8


def test_recovering_towards_a_lost_level_is_not_climbing():
    # recorded train.py run (train-noisy-bs4): 0.70-0.88 in its first epochs, robust peak 0.73, then
    # 0.49-0.69 while its loss rose; at the deadline the last 10 scores rise significantly, but
    # they climb back towards a level the run had and lost: pruned, not given grace
    a = [0.70, 0.88, 0.67, 0.73, 0.73, 0.76, 0.60, 0.57, 0.60, 0.54, 0.58, 0.49, 0.52, 0.49, 0.55,
         0.60, 0.69, 0.57, 0.59, 0.63]
    r = judge(a, deadline_epoch=20)
    assert (r.action, r.reason) == (Action.PRUNE, Reason.NEVER_ALIGNED)
    assert "no new high" in r.message and r.details["robust_peak_age"] >= 10
    # the same rise from a run that never was higher is still forming: grace
    forming = [0.05, 0.08, 0.1, 0.12, 0.15, 0.2, 0.25, 0.3, 0.33, 0.36, 0.38, 0.4, 0.43, 0.45, 0.47,
               0.49, 0.52, 0.53, 0.55, 0.56]
    assert judge(forming, deadline_epoch=20).reason is Reason.NOT_YET_ALIGNED


def test_a_run_still_learning_gets_grace_while_its_alignment_recovers():
    # recorded train.py run (train-tiny-default-48clips-seed84): robust peak 0.74 at epoch 9, fell to
    # 0.40 while the loss kept making new bests (8.52 at 11, 8.12 at 19, 7.66 at 20), back to 0.8 by 39
    a = [0.05, 0.08, 0.11, 0.23, 0.38, 0.6, 0.68, 0.74, 0.77, 0.69, 0.58, 0.46, 0.41, 0.41, 0.4, 0.4, 0.4,
         0.42, 0.47, 0.49, 0.49, 0.53, 0.56, 0.58, 0.6, 0.63, 0.57, 0.58, 0.61, 0.64, 0.7, 0.63, 0.66, 0.67, 0.77]
    y = [75.46, 75.2, 65.35, 43.1, 13.79, 10.22, 11.62, 10.54, 16.02, 9.02, 8.52, 18.34, 16.84, 21.6, 10.25,
         13.58, 10.73, 8.55, 8.12, 7.66, 8.43, 7.6, 8.74, 9.02, 7.49, 7.37, 7.43, 7.57, 7.07, 9.74, 6.45, 11.08,
         6.69, 7.9, 6.31]
    verdicts = [judge(a[:t], deadline_epoch=20, objective=y[:t]) for t in range(20, len(a) + 1)]
    assert not any(v.ends_run for v in verdicts)
    assert "still learning" in verdicts[0].message and verdicts[0].details["objective_improving"]
    assert "marginal alignment" in verdicts[-1].message
    # without the loss (or with the grace off) it is the bs-4 case: no new high for 11 validations
    for kw in ({}, {"objective": y[:20], "improving_window": None}):
        r = judge(a[:20], deadline_epoch=20, **kw)
        assert (r.action, r.reason) == (Action.PRUNE, Reason.NEVER_ALIGNED) and "no new high" in r.message
    # a loss that stalled is not learning: train-noisy-bs4's losses (best 7.15 at 11, 7.23-7.98 after)
    bs4_a = [0.70, 0.88, 0.67, 0.73, 0.73, 0.76, 0.60, 0.57, 0.60, 0.54, 0.58, 0.49, 0.52, 0.49, 0.55,
             0.60, 0.69, 0.57, 0.59, 0.63, 0.68]
    bs4_y = [24.96, 9.8, 8.08, 16.6, 9.53, 8.49, 7.4, 9.93, 7.34, 7.16, 7.15, 7.34, 7.28, 7.32, 7.98, 7.76,
             7.23, 7.91, 7.86, 7.76, 7.58]
    r = judge(bs4_a[:21], deadline_epoch=20, objective=bs4_y[:21])
    assert r.reason is Reason.NEVER_ALIGNED and not r.details["objective_improving"]
    # the message names the reason the grace was given: a recent peak that is now falling is not climbing
    falling = list(np.linspace(0.3, 0.79, 12)) + list(np.linspace(0.75, 0.42, 9))
    r = judge(falling, deadline_epoch=20, objective=list(np.linspace(20, 5, 21)))
    assert not r.ends_run and "still learning" in r.message and "climbing" not in r.message
    with pytest.raises(ValueError, match="window must be >= 1"):
        judge(a[:20], deadline_epoch=20, objective=y[:20], improving_window=0)
    # ... and a loss that still improves does not save a run whose alignment never reached the band
    low = 0.25 + 0.01 * np.sin(np.arange(30))
    r = judge(low, deadline_epoch=20, objective=list(np.linspace(10, 5, 30)))
    assert r.reason is Reason.NEVER_ALIGNED and r.details["objective_improving"]


def test_marginal_alignment_past_the_deadline_is_not_a_failure():
    # recorded train.py run (train-converging-lr1e-3-seed3-long): holds 0.61-0.68 at the deadline,
    # 0.72-0.78 for the next 100 epochs while its loss drops again from 7.2 to 5.3
    a = [0.01, 0.10, 0.17, 0.43, 0.57, 0.63, 0.68, 0.73, 0.76, 0.78, 0.70, 0.74, 0.66, 0.62, 0.62, 0.61,
         0.66, 0.66, 0.63, 0.68, 0.66, 0.67, 0.71, 0.74, 0.72, 0.74]
    verdicts = [judge(a[:t], deadline_epoch=20) for t in range(20, len(a) + 1)]
    assert all(v.reason is Reason.NOT_YET_ALIGNED and not v.ends_run for v in verdicts)
    assert "marginal alignment" in verdicts[-1].message
    stalled = np.minimum(0.3 + 0.02 * np.arange(60), 0.79)  # stalls at 0.79: marginal, however long
    assert not judge(stalled, deadline_epoch=20).ends_run


def test_alignment_reached_later_counts():
    a = [0.1] * 25 + [0.85, 0.9]
    assert judge(a, deadline_epoch=20).reason is Reason.ALIGNED


def test_monotonicity_penalty_lowers_health():
    a = [0.5, 0.6, 0.7, 0.75]
    clean = judge(a, monotonicity=[1.0] * 4)
    messy = judge(a, monotonicity=[0.5] * 4, monotonic_penalty=0.2)
    assert messy.details["health"] == pytest.approx(clean.details["health"] - 0.1)
    zigzag = judge([0.5, 0.7, 0.5, 0.7, 0.5, 0.7])
    assert zigzag.details["nonmonotonicity"] == pytest.approx(0.4)  # 2 of 5 equal moves went down


def test_missing_or_nan_scores():
    assert judge([]).reason is Reason.MISSING_METRIC
    assert attention_detector(None).reason is Reason.MISSING_METRIC
    assert judge([math.nan, math.nan]).reason is Reason.MISSING_METRIC
    r = judge([0.2, math.nan, 0.85, math.nan, 0.9])
    # reached once the robust peak is (the lower median of 0.2, 0.85, 0.9): at index 4, not 2
    assert r.reason is Reason.ALIGNED and r.details["aligned_at"] == 4


def test_held_alignment_is_the_median_of_the_last_five_finite_scores():
    assert held_alignment([0.1, 0.9, 0.88, 0.91, 0.87, 0.2]) == 0.88  # one bad last validation
    assert held_alignment([0.5, math.nan, 0.7]) == 0.5  # lower median of an even count
    assert held_alignment([]) is None and held_alignment([math.nan]) is None


def test_a_barely_formed_alignment_gets_longer_before_a_dip_is_a_collapse():
    # the shape of two recorded tiny runs (seed12, seed55): the robust peak touches 0.80-0.81, the
    # score falls to ~0.6 for 5-7 validations, then comes back to 0.85 and the run's best loss
    rise = [0.1, 0.4, 0.65, 0.79, 0.80, 0.81, 0.80]
    dip = [0.62, 0.58, 0.60, 0.57, 0.61, 0.59, 0.60]
    a = rise + dip + [0.72, 0.80, 0.84, 0.85, 0.86]
    verdicts = [judge(a[:t]) for t in range(1, len(a) + 1)]
    assert not any(v.ends_run for v in verdicts)
    during = judge(rise + dip)
    assert during.reason is Reason.ALIGNMENT_SETTLING and not during.voting and not during.details["firm"]
    assert "barely formed" in during.message
    # ... a dip that lasts barely_formed_consecutive validations is a collapse all the same
    stuck = rise + dip + [0.55, 0.5, 0.45]
    r = judge(stuck)
    assert (r.action, r.reason) == (Action.PRUNE, Reason.ALIGNMENT_COLLAPSED) and "barely formed" in r.message
    assert not judge(stuck[:-1]).ends_run
    assert judge(stuck[:-1], barely_formed_consecutive=2).ends_run  # the knob is what spared it
    # the same dip after a firm peak (robust 0.9 >= 0.8 + firm_margin) is a collapse within 2
    firm = [0.1, 0.4, 0.65, 0.88, 0.90, 0.91, 0.90] + dip[:2]
    r = judge(firm)
    assert (r.action, r.reason) == (Action.PRUNE, Reason.ALIGNMENT_COLLAPSED) and r.details["firm"]
    assert not judge(firm, firm_margin=0.15).ends_run  # 0.90 < 0.95: barely formed under that margin


# Measured (benchmarks/README.md, "Early stopping in a demo study"): demo-size train.py runs warm-started
# from a checkpoint whose alignment held 0.88 (global epoch 16.7), validating every 5 steps
WARM_LR_1 = [0.000, 0.006, 0.015, 0.016]  # lr 1.0: gone for good
WARM_LR_02 = [0.034, 0.065, 0.143, 0.360, 0.517, 0.364, 0.817, 0.484]  # lr 0.2: val_loss 101 -> 36 (parent 6.6)
WARM_LR_3E3 = [0.905, 0.782, 0.876, 0.827, 0.874, 0.812, 0.888, 0.875, 0.874, 0.880, 0.890, 0.891, 0.861, 0.885]


@pytest.mark.parametrize(
    ("scores", "inherited", "prune_at"),
    [
        (WARM_LR_1, 0.88, 2),
        (WARM_LR_02, 0.88, 2),
        (WARM_LR_1, None, None),  # without the parent's alignment: nothing formed here, before the deadline
        (WARM_LR_1, 0.7, None),  # a parent that held below the threshold hands on no alignment to lose
        (WARM_LR_3E3, 0.88, None),  # the top of the demo's range keeps it (one 0.78)
        ([0.9, 0.6, 0.62, 0.58] + [0.6] * 8, 0.82, 11),  # barely formed parent: 10 validations below the band
    ],
)
def test_an_inherited_alignment_collapses_from_the_first_validation(scores, inherited, prune_at):
    epochs = [16.67 + (t + 1) / 3 for t in range(len(scores))]  # global epochs, before the deadline (20)
    verdicts = [judge(scores[:t], epochs=epochs[:t], inherited=inherited) for t in range(1, len(scores) + 1)]
    ends = [t + 1 for t, v in enumerate(verdicts) if v.ends_run]
    assert (ends[0] if ends else None) == prune_at
    if prune_at is not None:
        r = verdicts[prune_at - 1]
        assert (r.action, r.reason) == (Action.PRUNE, Reason.ALIGNMENT_COLLAPSED)
        assert r.details["inherited_alignment"] == inherited and "warm start" in r.message
