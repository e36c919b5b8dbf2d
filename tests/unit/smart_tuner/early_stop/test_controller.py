"""EarlyStopController: the vote, its vetoes and gates, both levels, explanations, resume."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ttsops.config import SmartEarlyStoppingConfig
from ttsops.errors import ConfigError, TunerError
from ttsops.smart_tuner.early_stop.controller import DetectorParams, EarlyStopController, columns
from ttsops.smart_tuner.early_stop.detectors import Action, Reason
from ttsops.smart_tuner.early_stop.vote import GROUPS, vote


def curve(n: int, *, align_at: float | None = 6.0, floor: float = 0.5, tau: float = 4.0, noise: float = 0.002,
          seed: int = 0) -> dict[str, np.ndarray]:
    t = np.arange(1, n + 1, dtype=float)
    rng = np.random.default_rng(seed)
    loss = (floor + 1.5 * np.exp(-t / tau)) * (1 + noise * rng.standard_normal(n))
    align = np.full(n, 0.2) if align_at is None else 0.2 + 0.7 / (1 + np.exp(-(t - align_at)))
    return {"val_loss": loss, "epoch": t, "attention_alignment_score": align}


def first_end(ctl: EarlyStopController, hist: dict[str, np.ndarray], budget: int | None = None):
    n = len(hist["val_loss"])
    for t in range(1, n + 1):
        d = ctl.decide_trial({k: v[:t] for k, v in hist.items()}, budget=budget or n)
        if d.should_end:
            return t, d
    return None, d


def test_converged_run_stops_with_reasons_after_alignment():
    hist = curve(80)
    t, d = first_end(EarlyStopController(), hist)
    assert t is not None and 20 <= t <= 60
    assert d.action is Action.STOP and d.score >= 0.7
    names = {v.name for v in d.verdicts}
    assert names >= {"divergence", "mann_kendall", "cusum", "adaptive_patience", "gp_forecast", "attention", "patience"}
    loss = hist["val_loss"]
    assert (loss[:t].min() - loss.min()) / loss.min() <= 0.005  # regret within min_delta


def test_still_falling_run_is_not_stopped():
    hist = curve(40, tau=60.0)
    assert first_end(EarlyStopController(), hist, budget=40)[0] is None


def test_nan_loss_prunes_at_once_even_in_warmup():
    d = EarlyStopController().decide_trial({"val_loss": [2.0, 1.5, math.nan]})
    assert (d.action, d.reason) == (Action.PRUNE, Reason.NON_FINITE)
    assert d.confidence == 1.0


def test_divergence_prunes():
    loss = [2.0, 1.5, 1.2, 1.0, 0.9, 0.85, 2.0, 4.0, 9.0]
    d = EarlyStopController().decide_trial({"val_loss": loss})
    assert (d.action, d.reason) == (Action.PRUNE, Reason.DIVERGENCE)


def test_before_the_alignment_forms_a_divergence_needs_a_larger_jump():
    # the shape of two recorded demo runs (seed65, seed93): val_loss jumps 2-2.6x its best for 3-4
    # validations while the attention forms (0.4-0.55) and train_loss falls; both aligned and trained on
    loss = [66.5, 33.9, 18.7, 8.9, 16.0, 18.0, 23.2, 21.4, 7.5]
    forming = [0.05, 0.05, 0.15, 0.37, 0.47, 0.55, 0.56, 0.51, 0.65]
    hist = {"val_loss": np.array(loss), "attention_alignment_score": np.array(forming),
            "epoch": np.arange(1.0, len(loss) + 1)}
    assert first_end(EarlyStopController(), hist)[0] is None
    d = EarlyStopController(params=DetectorParams(divergence_factor_unaligned=2.0)).decide_trial(
        {k: v[:8] for k, v in hist.items()})
    assert (d.action, d.reason) == (Action.PRUNE, Reason.DIVERGENCE)  # the knob is what spares it
    # once aligned, the same 2x jump is a divergence ...
    aligned = [0.05, 0.5, 0.85, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]
    d = EarlyStopController().decide_trial({"val_loss": np.array(loss[:8]), "attention_alignment_score": np.array(aligned[:8]),
                                            "epoch": hist["epoch"][:8]})
    assert (d.action, d.reason) == (Action.PRUNE, Reason.DIVERGENCE)
    # ... and before it, a blow-up (>= 3x) still is
    blown = loss[:5] + [40.0, 60.0, 90.0]
    d = EarlyStopController().decide_trial({"val_loss": np.array(blown), "attention_alignment_score": np.array(forming[:8]),
                                            "epoch": hist["epoch"][:8]})
    assert (d.action, d.reason) == (Action.PRUNE, Reason.DIVERGENCE)


def test_no_plateau_stop_before_alignment_then_never_aligned_prunes():
    hist = curve(60, align_at=None, tau=2.0)  # loss flat from ~10, alignment never forms
    ctl = EarlyStopController()
    reasons = [ctl.decide_trial({k: v[:t] for k, v in hist.items()}, budget=60) for t in range(1, 21)]
    assert all(not d.should_end for d in reasons[:19])
    assert reasons[12].reason is Reason.WAITING_FOR_ALIGNMENT
    assert (reasons[19].action, reasons[19].reason) == (Action.PRUNE, Reason.NEVER_ALIGNED)  # epoch 20


def test_flat_zero_attention_prunes_before_the_deadline():
    hist = curve(40, align_at=None, tau=8.0)  # loss still falling fast, attention learned nothing
    rng = np.random.default_rng(3)
    hist["attention_alignment_score"] = np.abs(0.01 * rng.standard_normal(40))
    t, d = first_end(EarlyStopController(), hist)
    assert t == 8 and (d.action, d.reason) == (Action.PRUNE, Reason.NEVER_ALIGNED)
    assert "attention flat" in d.message
    # 0.000 -> 0.084 by validation 8 but rising steadily: not flat; the deadline rule judges it, and
    # a significant climb gets max_patience (15) validations of grace past the deadline (epoch 20)
    climbing = dict(curve(60, align_at=None, tau=8.0), attention_alignment_score=0.012 * np.arange(60))
    t, d = first_end(EarlyStopController(), climbing)
    assert t == 35 and d.reason is Reason.NEVER_ALIGNED and "attention flat" not in d.message


def test_marginal_alignment_blocks_plateau_stops_until_it_holds():
    hist = curve(80)
    marginal = np.r_[np.linspace(0.1, 0.78, 12), 0.82, np.full(67, 0.74)]
    t, _ = first_end(EarlyStopController(), dict(hist, attention_alignment_score=marginal))
    assert t is None  # a flat loss while the alignment holds at 0.74 (< 0.8) is not convergence
    d = EarlyStopController().decide_trial({k: v[:40] for k, v in dict(hist, attention_alignment_score=marginal).items()})
    # one 0.82 is not an alignment (robust peak 0.78): past the deadline it is a marginal one
    assert d.reason is Reason.WAITING_FOR_ALIGNMENT and "marginal alignment" in d.verdict("attention").message
    settling = np.r_[np.linspace(0.1, 0.78, 12), 0.82, 0.84, np.full(66, 0.74)]  # held 0.8+ twice
    d = EarlyStopController().decide_trial({k: v[:40] for k, v in dict(hist, attention_alignment_score=settling).items()})
    assert d.reason is Reason.WAITING_FOR_ALIGNMENT and d.verdict("attention").reason is Reason.ALIGNMENT_SETTLING
    firm = np.r_[settling[:50], np.full(30, 0.88)]  # holds again from validation 53 (median of 5)
    t, d = first_end(EarlyStopController(), dict(hist, attention_alignment_score=firm))
    assert t is not None and t >= 53 + 8 and d.action is Action.STOP  # the loss gets 8 validations


def test_no_plateau_stop_right_after_the_alignment_forms():
    # recorded demo-size run (train-demo-converging-lr5e-4): loss drifting up at a 0.7 alignment,
    # alignment reaches 0.8 at validation 46, loss falls 27% after; it was stopped at 47 ("overfitting")
    rng = np.random.default_rng(5)
    n = 70
    loss = np.r_[np.linspace(9.0, 6.3, 30), np.linspace(6.3, 7.0, 16), np.linspace(6.8, 4.6, 24)]
    loss = loss * (1 + 0.04 * rng.standard_normal(n))
    align = np.r_[np.linspace(0.05, 0.7, 30), np.full(15, 0.7), np.full(25, 0.86)]
    hist = {"val_loss": loss, "epoch": np.arange(1.0, n + 1), "attention_alignment_score": align}
    ctl = EarlyStopController()
    decisions = [ctl.decide_trial({k: v[:t] for k, v in hist.items()}, budget=n) for t in range(1, n + 1)]
    after = decisions[45:53]  # validations 46..53: aligned 0..7 validations ago
    assert all(not d.should_end and d.reason is Reason.WAITING_FOR_ALIGNMENT for d in after)
    assert "validations to respond" in after[1].message


def test_no_plateau_stop_while_the_training_loss_still_falls():
    # validation loss flat and aligned (the vote says stop), training loss still falling 10% per
    # 15 validations: not converged yet (Prechelt's training progress)
    hist = curve(80)
    falling = 3.0 * np.exp(-np.arange(80) / 140.0)
    t_plain, _ = first_end(EarlyStopController(), hist, budget=200)  # (the look-ahead shrinks near the budget)
    t, d = first_end(EarlyStopController(), {**hist, "train_loss": falling}, budget=200)
    assert t_plain is not None and t is None
    assert d.reason is Reason.TRAINING_PROGRESS and "still learning" in d.message
    # once the training loss stalls too, the same run stops
    noise = 1 + 0.01 * np.random.default_rng(1).standard_normal(80)
    stalled = np.where(np.arange(80) < 30, falling, falling[29] * noise)  # flat, not constant
    t2, d2 = first_end(EarlyStopController(), {**hist, "train_loss": stalled}, budget=200)
    assert t2 is not None and d2.action is Action.STOP and t2 >= t_plain
    assert d2.verdict("training_progress").reason is Reason.PLATEAU  # judged stalled, not abstaining
    # the gate can be switched off
    t3, _ = first_end(EarlyStopController(params=DetectorParams(train_progress_floor=None)),
                      {**hist, "train_loss": falling}, budget=200)
    assert t3 == t_plain


def test_no_plateau_stop_while_the_learning_rate_is_still_being_lowered():
    # aligned and flat (the vote says plateau) while the schedule halves the rate every 20
    # validations: the gate holds until the rate is spent (< 5% of its peak), then the run stops
    hist = curve(140)
    lr = 1e-3 * 0.5 ** (np.maximum(np.arange(140) - 10, 0) / 20.0)
    t_plain, _ = first_end(EarlyStopController(), hist, budget=300)
    t, d = first_end(EarlyStopController(), {**hist, "learning_rate": lr}, budget=300)
    spent = int(np.argmax(lr < 0.05 * lr[0])) + 1
    assert t_plain is not None and t_plain < spent
    assert t is not None and t >= spent and d.action is Action.STOP
    ctl = EarlyStopController()
    gated = [ctl.decide_trial({k: v[:n] for k, v in {**hist, "learning_rate": lr}.items()}, budget=300)
             for n in range(1, spent)]
    assert any(d.reason is Reason.LR_ANNEALING and "still lowering the rate" in d.message for d in gated)
    # a constant rate does not gate; and the gate can be switched off
    assert first_end(EarlyStopController(), {**hist, "learning_rate": np.full(140, 1e-3)}, budget=300)[0] == t_plain
    off = EarlyStopController(params=DetectorParams(lr_annealing_drop=None))
    assert first_end(off, {**hist, "learning_rate": lr}, budget=300)[0] == t_plain


def test_a_falling_learning_rate_does_not_hold_back_an_overfitting_stop():
    hist = curve(90)
    t = np.arange(90)
    hist["val_loss"] = hist["val_loss"] * (1 + 0.01 * np.maximum(t - 12, 0))  # 1% a validation from 12 on
    lr = 1e-3 * 0.5 ** (t / 20.0)  # not spent before validation 87
    t_lr, d_lr = first_end(EarlyStopController(), {**hist, "learning_rate": lr})
    # held while the trend window still spans the minimum, stopped as soon as the rise is significant
    assert t_lr is not None and t_lr <= 35 and d_lr.reason is Reason.OVERFITTING


def test_alignment_collapse_prunes_within_three_validations():
    hist = curve(60)
    hist["attention_alignment_score"][30:] = 0.3
    t, d = first_end(EarlyStopController(params=DetectorParams(min_validations=40)), hist)
    assert (d.action, d.reason) == (Action.PRUNE, Reason.ALIGNMENT_COLLAPSED) and t - 1 - 30 <= 3


def test_without_attention_metrics_the_vote_uses_the_rest():
    hist = curve(80)
    del hist["attention_alignment_score"]
    t, d = first_end(EarlyStopController(), hist)
    assert t is not None and d.groups["attention_analysis"] is None


def test_rows_and_columns_are_the_same_history():
    hist = curve(25)
    rows = [{k: float(v[i]) for k, v in hist.items()} for i in range(25)]
    rows[3].pop("attention_alignment_score")
    cols = columns(rows)
    assert math.isnan(cols["attention_alignment_score"][3])
    a = EarlyStopController().decide_trial(rows)
    hist["attention_alignment_score"][3] = math.nan
    b = EarlyStopController().decide_trial(hist)
    assert (a.action, a.reason, round(a.score, 6)) == (b.action, b.reason, round(b.score, 6))


def test_missing_metric_is_a_tuner_error():
    with pytest.raises(TunerError, match="val_loss"):
        EarlyStopController().decide_trial({"mel_loss": [1.0]})


def test_vote_weights_only_voting_groups():
    ctl = EarlyStopController(SmartEarlyStoppingConfig(ensemble_weights={
        "statistical_consensus": 1.0, "bayesian_prediction": 0.0, "attention_analysis": 1.0}))
    d = ctl.decide_trial(curve(30))
    stats = np.mean([v.score for v in d.verdicts if v.voting and v.name in GROUPS["statistical_consensus"]])
    attention = d.verdict("attention")
    assert attention is not None and attention.voting  # aligned (0.9): it votes, up to the stop threshold
    assert d.score == pytest.approx((stats + attention.score) / 2)  # gp weight 0
    assert vote([], ctl.weights) == (0.0, {g: None for g in GROUPS})


def test_decision_is_json_and_tags_are_strings():
    d = EarlyStopController().decide_trial({"val_loss": [1.0, 0.9, math.inf]})
    data = json.loads(d.to_json())
    assert data["action"] == "prune" and len(data["verdicts"]) == len(d.verdicts)
    tags = d.to_tags()
    assert tags["early_stop.trial.reason"] == "non_finite"
    assert all(isinstance(v, str) and len(v) < 5000 for v in tags.values())


def test_state_dict_round_trip_and_version_check():
    ctl = EarlyStopController()
    hist = curve(30)
    for t in range(10, 31, 5):
        ctl.decide_trial({k: v[:t] for k, v in hist.items()})
    state = json.loads(json.dumps(ctl.state_dict()))
    other = EarlyStopController()
    other.load_state_dict(state)
    assert other.decisions == ctl.decisions and len(other.decisions) == 5
    assert other.decide_trial(hist).reason == ctl.decide_trial(hist).reason
    with pytest.raises(TunerError, match="version"):
        other.load_state_dict({"version": 99})


def test_detector_params_validated():
    with pytest.raises(ConfigError, match="stop_threshold"):
        DetectorParams(stop_threshold=0)
    with pytest.raises(ConfigError, match="window"):
        DetectorParams(window=3)


# --- across generations -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("objectives", "stop"),
    [
        ([1.0, 0.9, 0.8, 0.7, 0.6, 0.5], False),
        ([1.0, 0.9, 0.9, 0.91, 0.9, 0.92, 0.95], True),  # 5 generations without a 0.5% gain
        ([1.0, 0.9, 0.9, 0.91, 0.9, 0.92], False),
        ([1.0], False),
    ],
)
def test_study_level_patience(objectives, stop):
    d = EarlyStopController().decide_study(objectives)
    assert d.should_end is stop and d.level == "study"
    if stop:
        assert d.reason is Reason.STUDY_NO_IMPROVEMENT


def test_failed_generations_do_not_crash_or_end_the_study():
    d = EarlyStopController().decide_study([1.0, 0.8, math.nan, 0.7, math.nan])
    assert not d.should_end
    assert d.verdict("generation_patience").details["wait"] == 1  # 0.7 improved; one failure since


def test_study_waits_until_the_best_generation_aligned():
    objectives = [1.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]
    unaligned = EarlyStopController().decide_study(objectives, generation_alignment=[0.3] * 8)
    assert unaligned.reason is Reason.WAITING_FOR_ALIGNMENT and not unaligned.should_end
    aligned = EarlyStopController().decide_study(objectives, generation_alignment=[0.9] * 8)
    assert aligned.should_end


def test_the_study_does_not_end_while_the_line_still_descends():
    """The best of noisy validations stood still for the patience while the line's head went on down
    (measured at 10 CPU-minutes, 80 clips: a study ended at 2.92 after 40% of its budget; without the
    study-level stop the same line reached 2.73): the line's level gates the stop, like the in-trial
    training-progress rule."""
    def demo() -> EarlyStopController:  # configs/demo.yaml: tuner_patience 3
        return EarlyStopController(SmartEarlyStoppingConfig(tuner_patience=3))

    objectives = [5.5, 3.27, 3.11, 3.12, 3.13, 3.115]  # 3 generations without a 0.5% better objective
    assert demo().decide_study(objectives).should_end
    descending = [5.4, 3.4, 3.30, 3.22, 3.15, 3.10]
    d = demo().decide_study(objectives, line_levels=descending)
    assert not d.should_end and d.reason is Reason.TRAINING_PROGRESS and "the line still descends" in d.message
    assert not d.verdict("line_progress").voting
    for flat in ([5.4, 3.4, 3.30, 3.32, 3.29, 3.31], [5.4, 3.4, 3.3, 3.3, 3.3, 3.3], [math.nan] * 6):
        d = demo().decide_study(objectives, line_levels=flat)
        assert d.should_end and d.reason is Reason.STUDY_NO_IMPROVEMENT, flat
    rising = demo().decide_study([0.1, 0.5, 0.49, 0.495, 0.497, 0.496], direction="maximize",
                                                line_levels=[0.1, 0.3, 0.35, 0.4, 0.45, 0.5])
    assert not rising.should_end  # maximize: a line still rising is descending in its sense
    assert demo().decide_study([0.1, 0.5, 0.49, 0.495, 0.497, 0.496], direction="maximize").should_end


def test_the_study_does_not_end_while_the_lines_training_loss_still_falls():
    """Measured (10 CPU-minutes, 80 clips, seed 1): the line's objective sat at 3.0-3.18 from step 120 to
    390 while its train_loss fell 4.9 -> 3.3, then the objective fell to 2.45 by step 750; the study had
    ended in that plateau after three carry-ons, at 48% of its budget. The line's train_loss gates the end
    like its level does (the in-trial rule 5, on the line); a flat train_loss lets it end."""
    cfg = SmartEarlyStoppingConfig(tuner_patience=3)
    objectives = [3.97, 3.47, 3.12, 3.01, 3.07, 3.11, 3.0, 3.06, 2.94, 3.07, 3.05, 3.14]
    flat_line = [3.9, 3.5, 3.1, 3.0, 3.05, 3.1, 3.0, 3.05, 2.95, 3.05, 3.0, 3.1]
    assert EarlyStopController(cfg).decide_study(objectives, line_levels=flat_line).should_end
    learning = [9.0, 7.1, 5.6, 4.9, 4.8, 4.5, 4.3, 4.1, 4.0, 3.8, 3.7, 3.4]
    d = EarlyStopController(cfg).decide_study(objectives, line_levels=flat_line, line_train_loss=learning)
    assert not d.should_end and d.reason is Reason.TRAINING_PROGRESS and "train_loss still falling" in d.message
    assert not d.verdict("line_training").voting
    done = [9.0, 7.1, 5.6, 4.9, 4.32, 4.3, 4.31, 4.29, 4.3, 4.31, 4.3, 4.29]
    for stalled in (done, [math.nan] * 12):
        assert EarlyStopController(cfg).decide_study(objectives, line_levels=flat_line, line_train_loss=stalled).should_end


def test_study_direction_maximize():
    assert not EarlyStopController().decide_study([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], direction="maximize").should_end
    assert EarlyStopController().decide_study([0.6, 0.5, 0.4, 0.3, 0.2, 0.1], direction="maximize").should_end


def weighted(attention_analysis: float) -> EarlyStopController:
    return EarlyStopController(SmartEarlyStoppingConfig(ensemble_weights={
        "statistical_consensus": 0.3, "bayesian_prediction": 0.4, "attention_analysis": attention_analysis}))


def test_attention_analysis_weight_counts_in_the_trial_vote():
    """ensemble_weights.attention_analysis changes in-trial decisions (it never did: the attention
    detector only abstained or vetoed). A barely-aligned run (holding ~0.82) votes to keep going: with
    the weight its plateau stop comes later; a firmly aligned one (0.9) votes at the stop threshold."""
    hist = curve(80)
    barely = {**hist, "attention_alignment_score": 0.2 + 0.62 / (1 + np.exp(-(hist["epoch"] - 6)))}
    t0, d0 = first_end(weighted(0.0), barely)
    t3, d3 = first_end(weighted(3.0), barely)
    assert t0 is not None and d0.action is Action.STOP
    assert t3 is None or t3 > t0  # held back by the unsettled alignment
    held = weighted(3.0).decide_trial({k: v[:t0] for k, v in barely.items()}, budget=80)
    att = held.verdict("attention")
    assert att is not None and held.groups["attention_analysis"] == pytest.approx(att.score) and att.score < 0.7
    # firm (holding 0.9): at the stop threshold once it holds still, half of it while still sharpening
    sharpening = weighted(1.0).decide_trial({k: v[:40] for k, v in hist.items()}, budget=80).verdict("attention")
    assert sharpening.details["sharpening"] and sharpening.score == pytest.approx(0.35)
    still = {**hist, "attention_alignment_score": np.minimum(hist["attention_alignment_score"], 0.88)}
    firm = weighted(1.0).decide_trial({k: v[:40] for k, v in still.items()}, budget=80).verdict("attention")
    assert firm.reason is Reason.ALIGNED and firm.score == pytest.approx(0.7) and not firm.ends_run


def test_attention_analysis_weight_counts_in_the_study_vote():
    """At study level the attention group votes too (it always abstained): a study whose best generation
    is barely aligned is not ended early by the vote when the weight is on; a firm one is."""
    objectives = [1.0, 0.8, 0.85, 0.9, 0.95, 1.0]  # 4 generations without improvement: the vote decides
    assert weighted(0.0).decide_study(objectives, generation_alignment=[0.8] * 6).should_end
    assert not weighted(0.3).decide_study(objectives, generation_alignment=[0.8] * 6).should_end
    assert weighted(0.3).decide_study(objectives, generation_alignment=[0.9] * 6).should_end
    d = weighted(0.3).decide_study(objectives, generation_alignment=[0.8] * 6)
    assert d.groups["attention_analysis"] == 0.0 and d.verdict("attention").voting


def test_a_warm_start_that_loses_its_inherited_alignment_is_pruned_at_the_second_validation():
    # measured: demo-size, warm-started from a checkpoint holding 0.88 (global epoch 16.7), lr 0.2
    hist = {"val_loss": np.array([101.2, 87.9, 44.8, 31.2, 21.7]), "global_epoch": 16.67 + np.arange(1, 6) / 3,
            "attention_alignment_score": np.array([0.034, 0.065, 0.143, 0.360, 0.517])}
    rows = {k: v[:2] for k, v in hist.items()}
    d = EarlyStopController().decide_trial(rows, budget=18, inherited_alignment=0.88)
    assert (d.action, d.reason) == (Action.PRUNE, Reason.ALIGNMENT_COLLAPSED)
    # without it, nothing formed in this run and the deadline (epoch 20) is ahead: it would go on
    ctl = EarlyStopController()
    assert not any(ctl.decide_trial({k: v[:t] for k, v in hist.items()}, budget=18).should_end for t in range(1, 6))
