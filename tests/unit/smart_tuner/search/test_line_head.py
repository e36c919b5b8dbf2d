"""The line's head (search/line_head.py): where a continuation starts, on a real in-memory Optuna
study (the OptimizationEngine) and a files-only ModelRegistry."""

from __future__ import annotations

from pathlib import Path

import pytest
from optuna.trial import TrialState

from ttsops.config import OptimizationConfig, ParamSpec, RegistryConfig
from ttsops.registry.model_registry import Candidate, ModelRegistry
from ttsops.smart_tuner.search.line_head import LineHead
from ttsops.smart_tuner.search.opt_engine import OptimizationEngine
from ttsops.smart_tuner.search.warm_line import (
    CARRY_ON_ATTR,
    HEAD_ATTR,
    end_level,
    keeps_the_line,
    line_level,
    validation_noise,
)
from ttsops.smart_tuner.study import history

SPACE = {"learning_rate": ParamSpec(type="loguniform", low=1e-5, high=1e-2)}
# measured (benchmarks/README.md, tuner against baselines, 80 clips, seed 2): the line's generation,
# whose best validation 3.04 is a dip, and continuations of it that never went below it
LINE = [3.27, 3.66, 3.72, 3.71, 3.04, 3.10, 3.20]
AS_GOOD = [[3.21, 3.21, 3.22, 3.34, 3.34, 3.56, 3.45], [3.31, 3.32, 3.40, 3.48]]
WORSE = [3.57, 3.42, 3.74]


def test_a_continuation_keeps_the_line_when_its_level_is_within_the_margin():
    reference = line_level(LINE, 3.04)  # 3.27: the line's level at the dip
    assert reference == pytest.approx(3.268)
    for values in AS_GOOD:
        assert min(values) > 3.04  # none of them would ever become the best
        assert keeps_the_line(line_level(values, min(values)), reference, 0.1, sigmas=2.0)  # at its kept one
    assert not keeps_the_line(line_level(WORSE, min(WORSE)), reference, 0.1, sigmas=2.0)  # its level 3.66
    # against the line's end (3.12, it went on down after the dip) the first one ended rising, at 3.46
    assert not keeps_the_line(end_level(AS_GOOD[0]), end_level(LINE), 0.1, sigmas=2.0)
    assert not keeps_the_line(3.31, 3.0, 0.1, sigmas=2.0)  # 0.31 past a 0.2 margin
    assert keeps_the_line(0.5, 0.55, 0.1, sigmas=2.0, maximize=True)


def test_the_level_at_the_end_of_a_generation():
    assert end_level([3.0, 2.9, 2.8, 2.7, 2.6]) == pytest.approx(2.6)  # a steady descent: its end
    assert end_level([3.0, 3.0, 3.0, 3.0, 2.5]) == pytest.approx(3.0)  # a last lucky dip does not count
    assert end_level(LINE) == pytest.approx(3.12)  # the measured line went on down after its dip
    assert end_level([2.5, 2.4]) == 2.4 and end_level([]) is None and end_level([float("nan")]) is None
    assert end_level([4.20, 7.07, 8.12, 4.71, 3.65, 3.50, 3.85]) == pytest.approx(3.50)  # down a hump: not 2.66


@pytest.fixture
def study(tmp_path: Path):
    c = OptimizationConfig(sampler="random", pruner="median", seed=3, warm_prune_sigmas=2.0,
                           hyperband={"min_resource": 1, "max_resource": 9, "reduction_factor": 3})
    eng = OptimizationEngine(c, SPACE, storage="memory", study_name="h")
    reg = ModelRegistry(RegistryConfig(), tmp_path / "study")
    return eng, reg, LineHead(eng, reg, lambda p: {"base": 1, **p}, 2.0)


def generation(eng, reg, tmp_path: Path, values, reference=None, register=True, mode=None):
    """One completed generation: its objectives, kept checkpoint (its best validation), newest
    checkpoint (its last) and value; ``mode``: its restart plan's."""
    t = eng.ask()
    if mode is not None:
        t.set_user_attr(history.PLAN_ATTR, {"mode": mode})
    if reference is not None:
        eng.set_reference(t, reference)
    for step, v in enumerate(values, start=1):
        eng.report(t, v, step)
    ckpt, newest = tmp_path / f"gen_{t.number}" / "kept.pt", tmp_path / f"gen_{t.number}" / "newest.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(f"weights of {t.number} at its best".encode())
    newest.write_bytes(f"weights of {t.number} at its end".encode())
    t.set_user_attr(history.CKPT_ATTR, str(ckpt))
    t.set_user_attr(history.METRICS_ATTR, {"val_loss": min(values)})
    eng.tell(t, min(values), TrialState.COMPLETE)
    if register:
        reg.consider(Candidate("h", t.number, min(values), ckpt, params=t.params, hparams=t.params))
    return t.number, ckpt, newest


def test_the_next_continuation_starts_where_the_head_stopped_and_the_best_stays_the_champion(study, tmp_path):
    eng, reg, line = study
    assert line.source() is None  # nothing yet: a fresh start
    n0, _, newest0 = generation(eng, reg, tmp_path, LINE)
    assert line.advance(n0, newest0)  # it ended at the line's level: its end is the head
    assert eng.study.user_attrs[HEAD_ATTR] == {"generation": n0, "checkpoint": str(newest0), "level": pytest.approx(3.12)}
    src = line.source()
    assert src.is_head and src.path == newest0 and src.level == pytest.approx(3.12) and reg.best().generation == n0
    n1, _, newest1 = generation(eng, reg, tmp_path, [3.25, 3.2, 3.15, 3.12, 3.10], reference=src.level)
    assert reg.best().generation == n0  # 3.10 does not beat 3.04: the champion stays
    assert line.advance(n1, newest1)  # but it carries the line on, from its last checkpoint
    src = line.source()
    assert src.is_head and src.path == newest1 and src.record.generation == n1
    assert src.record.objective == pytest.approx(3.10) and src.record.hparams["base"] == 1
    n2, _, newest2 = generation(eng, reg, tmp_path, WORSE, reference=src.level)
    assert not line.advance(n2, newest2) and line.source().path == newest1  # worse: the head stays
    level1 = line.source().level  # the head's level after each generation, for the study-level stop:
    assert line.levels([n0, n1, n2, 99]) == pytest.approx([3.12, level1, level1, float("nan")], nan_ok=True)
    n3, _, newest3 = generation(eng, reg, tmp_path, AS_GOOD[0], reference=src.level)
    assert not line.advance(n3, newest3)  # as good at its best validation, but it ended rising (3.46)
    n4, ckpt4, _ = generation(eng, reg, tmp_path, [2.9, 3.3, 3.5, 3.6], reference=src.level)
    assert line.advance(n4, None) and reg.best().generation == n4  # a new best that ended badly
    src = line.source()  # ... is the head at its kept checkpoint: best_model.pt
    assert not src.is_head and src.path == reg.best_path and src.level == pytest.approx(line_level([2.9, 3.3, 3.5, 3.6], 2.9))
    ckpt4.unlink()  # a new best's own file may go: best_model.pt is the copy the line starts from
    assert line.source().path == reg.best_path


def test_the_head_cannot_drift_upwards_one_margin_at_a_time(study, tmp_path):
    eng, reg, _ = study
    line = LineHead(eng, reg, dict, 0.0)  # the margin is MIN_REL (1%) of the reference: 0.033 here
    n0, _, _ = generation(eng, reg, tmp_path, LINE)
    best_level = line_level(LINE, 3.04)
    # judged against a head that had drifted to 3.30: within its margin, but 0.05 past the best's level
    n1, _, newest1 = generation(eng, reg, tmp_path, [3.33, 3.32, 3.31, 3.32, 3.318], reference=3.30)
    assert keeps_the_line(end_level([3.33, 3.32, 3.31, 3.32, 3.318]), 3.30, 0.0, sigmas=0.0)  # the old rule
    assert not line.advance(n1, newest1)
    n2, _, newest2 = generation(eng, reg, tmp_path, [3.30, 3.29, 3.30, 3.29, 3.29], reference=3.30)
    assert end_level([3.30, 3.29, 3.30, 3.29, 3.29]) <= best_level + 0.01 * best_level
    assert line.advance(n2, newest2) and line.source().path == newest2
    old = LineHead(eng, reg, dict, 2.0)
    eng.study.set_user_attr(HEAD_ATTR, n2)  # a study written before the newest checkpoint was handed on
    assert old.source().path == tmp_path / f"gen_{n2}" / "kept.pt" and old.source().level is None


def test_without_a_margin_or_with_its_checkpoint_gone_the_line_starts_from_the_best(study, tmp_path):
    eng, reg, _ = study
    n0, _, _ = generation(eng, reg, tmp_path, LINE)
    n1, _, newest1 = generation(eng, reg, tmp_path, [3.25, 3.2, 3.15, 3.12, 3.10], reference=3.12)
    assert not LineHead(eng, reg, dict, None).advance(n1, newest1)  # warm_prune_sigmas: null
    assert LineHead(eng, reg, dict, 2.0).advance(n1, newest1)
    newest1.unlink()  # the head's checkpoint was deleted: fall back to best_model.pt
    src = LineHead(eng, reg, dict, 2.0).source()
    assert src.record.generation == n0 and not src.is_head


def test_a_last_validation_past_the_margin_hands_on_the_kept_checkpoint_not_the_newest(study, tmp_path):
    """Measured (80 clips, seed 0): a generation at 3.30 whose last validation was 3.80; its robust
    level at the end (3.45) was within the margin, its newest weights were not, and the next
    continuation from them sat at 3.65-3.85 for a whole generation."""
    eng, reg, _ = study
    values = [4.09, 3.75, 3.56, 3.11, 3.29, 3.30, 3.80]
    n0, _, newest0 = generation(eng, reg, tmp_path, values)
    assert end_level(values) == pytest.approx(3.445)
    line = LineHead(eng, reg, dict, 0.2 / validation_noise(eng.study.get_trials()))  # the study's margin: 0.2
    assert line.advance(n0, newest0)  # the best: the head, but at its kept checkpoint
    src = line.source()
    assert src.path == reg.best_path and not src.is_head and src.level == pytest.approx(line_level(values, 3.11))


def test_after_line_patience_rejections_the_head_carries_on_as_one_run(study, tmp_path):
    """The pinned-space diagnostic (benchmarks/README.md, seventh run): from a head at 3.10 every
    continuation rose to 3.4-3.85 while the alignment formed, as the continuous run does there, and
    was pruned 24 times in a row. After ``line_patience`` rejections the head resumes with its own
    params, is not judged by value, and becomes the head wherever it ends."""
    eng, reg, _ = study
    line = LineHead(eng, reg, dict, 2.0, patience=2)
    n0, _, newest0 = generation(eng, reg, tmp_path, LINE)
    assert line.advance(n0, newest0) and len(line.rejections()) == 0 and line.queue_carry_on() is None
    head_params = dict(eng.frozen(n0).params)
    hump = [3.42, 3.61, 3.77, 3.85, 3.80]
    for k in (1, 2):  # two continuations of the head on the hump: the warm-line rule prunes each
        t = eng.ask()
        t.set_user_attr(history.PLAN_ATTR, {"mode": "warm_start"})
        eng.set_reference(t, line.source().level)
        assert any(eng.report(t, v, step) for step, v in enumerate(hump, start=1))
        eng.tell(t, None, TrialState.PRUNED)
        assert len(line.rejections()) == k
    fresh = eng.ask()  # a fresh trial (no checkpoint) is not a rejection of the head
    fresh.set_user_attr(history.PLAN_ATTR, {"mode": "fresh"})
    eng.tell(fresh, 9.0, TrialState.COMPLETE)
    assert len(line.rejections()) == 2
    assert line.queue_carry_on() == head_params
    assert line.queue_carry_on() is None  # one at a time: it is queued already
    stopped = eng.ask()  # an in-trial rule (never aligned, divergence) stops the carry-on
    stopped.set_user_attr(history.PLAN_ATTR, {"mode": "resume"})
    eng.tell(stopped, None, TrialState.PRUNED)
    assert stopped.user_attrs[CARRY_ON_ATTR] and len(line.rejections()) == 3
    assert line.queue_carry_on() is None  # replaying it exactly would end the same way: the sampler's turn
    explored = eng.ask()
    explored.set_user_attr(history.PLAN_ATTR, {"mode": "warm_start"})
    eng.tell(explored, None, TrialState.PRUNED)
    assert line.queue_carry_on() == head_params
    t = eng.ask()
    assert t.params == head_params and t.user_attrs[CARRY_ON_ATTR]
    eng.set_reference(t, line.source().level)  # even with a reference, its value does not prune it
    assert not any(eng.report(t, v, step) for step, v in enumerate(hump, start=1))
    newest = tmp_path / "carried.pt"
    newest.write_bytes(b"weights at the end of the hump")
    eng.tell(t, min(hump), TrialState.COMPLETE)
    assert line.advance(t.number, newest)  # ended at 3.8, far past the margin: the head all the same
    assert line.source().path == newest and line.source().level == pytest.approx(end_level(hump))
    assert len(line.rejections()) == 0 and line.queue_carry_on() is None
    assert LineHead(eng, reg, dict, 2.0, patience=None).queue_carry_on() is None


def test_a_completed_continuation_short_of_the_line_is_a_rejection_too(study, tmp_path):
    eng, reg, _ = study
    line = LineHead(eng, reg, dict, 2.0, patience=1)
    assert len(line.rejections()) == 0 and line.queue_carry_on() is None  # no head yet
    n0, _, newest0 = generation(eng, reg, tmp_path, LINE)
    line.advance(n0, newest0)
    n1, _, newest1 = generation(eng, reg, tmp_path, [3.25, 3.2, 3.15, 3.12, 3.10], reference=3.12, mode="resume")
    assert line.advance(n1, newest1) and len(line.rejections()) == 0  # within the margin: it moved the head
    n2, _, newest2 = generation(eng, reg, tmp_path, WORSE, reference=line.source().level, mode="warm_start")
    assert not line.advance(n2, newest2) and len(line.rejections()) == 1
    assert line.queue_carry_on() == dict(eng.frozen(n1).params)  # the head's, not the best's (n0)


def test_at_a_stall_a_head_clearly_worse_than_the_best_goes_back_to_the_best(study, tmp_path):
    """Measured (eighth run, 10 CPU-min, seed 1): a continuation at lr 3e-3 / batch 24 moved the head
    to 3.39 while the best stood at 2.87, and the study's last carry-ons trained that line on."""
    eng, reg, _ = study
    line = LineHead(eng, reg, dict, 2.0, patience=2)
    n0, _, newest0 = generation(eng, reg, tmp_path, LINE)
    n1, _, newest1 = generation(eng, reg, tmp_path, [3.3, 3.25, 3.2, 3.15, 3.2], reference=3.12, mode="warm_start")
    eng.study.set_user_attr(HEAD_ATTR, {"generation": n1, "checkpoint": str(newest1), "level": 3.18})
    assert line.carry_on_before_end([n0, n1], 2)  # 3.18 is within the margin of the best's 3.27: it stays
    assert eng.study.user_attrs[HEAD_ATTR]["generation"] == n1
    carried = eng.ask()  # the queued carry-on ran (and is no longer pending) ...
    assert carried.user_attrs[CARRY_ON_ATTR] and line.carry_on_before_end([n0, n1], 2)  # (while it runs: pending)
    eng.tell(carried, None, TrialState.PRUNED)
    eng.study.set_user_attr(HEAD_ATTR, {"generation": n1, "checkpoint": str(newest1), "level": 3.9})
    assert line.carry_on_before_end([n0, n1], 2)  # ... a head at 3.9 goes back to the best
    assert eng.study.user_attrs[HEAD_ATTR] == {"generation": n0, "checkpoint": None, "level": pytest.approx(line_level(LINE, 3.04))}
    src = line.source()
    assert src.path == reg.best_path and not src.is_head
    t = eng.ask()  # the carry-on: the champion's own params, from best_model.pt
    assert t.params == eng.frozen(n0).params and t.user_attrs[CARRY_ON_ATTR]
    for step, v in enumerate([3.5, 3.6, 3.7], start=1):
        eng.report(t, v, step)
    eng.tell(t, 3.5, TrialState.COMPLETE)
    newest = tmp_path / "carried.pt"
    newest.write_bytes(b"the champion's line, three validations on")
    assert line.advance(t.number, newest)  # the head wherever it ends, clearly worse than the best ...
    assert line.carry_on_before_end([n0, n1, t.number], 2)
    assert eng.study.user_attrs[HEAD_ATTR]["generation"] == t.number  # ... and it stays: going back would replay it
    assert line.source().path == newest
