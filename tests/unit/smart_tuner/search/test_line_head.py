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
from ttsops.smart_tuner.search.warm_line import HEAD_ATTR, keeps_the_line, line_level
from ttsops.smart_tuner.study import history

SPACE = {"learning_rate": ParamSpec(type="loguniform", low=1e-5, high=1e-2)}
# measured (benchmarks/README.md, tuner against baselines, 80 clips, seed 2): the line's generation,
# whose best validation 3.04 is a dip, and continuations of it that never went below it
LINE = [3.27, 3.66, 3.72, 3.71, 3.04, 3.10, 3.20]
AS_GOOD = [[3.21, 3.21, 3.22, 3.34, 3.34, 3.56, 3.45], [3.31, 3.32, 3.40, 3.48]]
WORSE = [3.57, 3.42, 3.74]


def test_a_continuation_within_the_margin_of_the_line_keeps_it_and_a_worse_one_does_not():
    reference = line_level(LINE, 3.04)  # 3.27: the line's level at the dip
    for values in AS_GOOD:
        assert min(values) > 3.04  # none of them would ever become the best
        assert keeps_the_line(values, min(values), reference, 0.1, sigmas=2.0)
    assert not keeps_the_line(WORSE, min(WORSE), reference, 0.1, sigmas=2.0)  # its level 3.66
    assert not keeps_the_line(AS_GOOD[1], 3.31, 3.0, 0.1, sigmas=2.0)  # 0.31 past a 0.2 margin
    assert keeps_the_line([0.5, 0.6], 0.6, 0.55, 0.1, sigmas=2.0, maximize=True)


@pytest.fixture
def study(tmp_path: Path):
    c = OptimizationConfig(sampler="random", pruner="median", seed=3, warm_prune_sigmas=2.0,
                           hyperband={"min_resource": 1, "max_resource": 9, "reduction_factor": 3})
    eng = OptimizationEngine(c, SPACE, storage="memory", study_name="h")
    reg = ModelRegistry(RegistryConfig(), tmp_path / "study")
    return eng, reg, LineHead(eng, reg, lambda p: {"base": 1, **p}, 2.0)


def generation(eng, reg, tmp_path: Path, values, reference=None, register=True):
    """One completed generation: its objectives, kept checkpoint and value (its best validation)."""
    t = eng.ask()
    if reference is not None:
        eng.set_reference(t, reference)
    for step, v in enumerate(values, start=1):
        eng.report(t, v, step)
    ckpt = tmp_path / f"gen_{t.number}" / "kept.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(f"weights of {t.number}".encode())
    t.set_user_attr(history.CKPT_ATTR, str(ckpt))
    t.set_user_attr(history.METRICS_ATTR, {"val_loss": min(values)})
    eng.tell(t, min(values), TrialState.COMPLETE)
    if register:
        reg.consider(Candidate("h", t.number, min(values), ckpt, params=t.params, hparams=t.params))
    return t.number, ckpt


def test_the_next_continuation_starts_from_the_head_and_the_best_stays_the_champion(study, tmp_path):
    eng, reg, line = study
    assert line.source() is None  # nothing yet: a fresh start
    n0, _ = generation(eng, reg, tmp_path, LINE)
    assert line.advance(n0) and eng.study.user_attrs[HEAD_ATTR] == n0  # the best is the head
    src = line.source()
    assert src is not None and not src.is_head and src.path == reg.best_path
    ref = line_level(LINE, src.record.objective)
    n1, ckpt1 = generation(eng, reg, tmp_path, AS_GOOD[0], reference=ref)
    assert reg.best().generation == n0  # 3.21 does not beat 3.04: the champion stays
    assert line.advance(n1)  # but it carries the line on
    src = line.source()
    assert src.is_head and src.path == ckpt1 and src.record.generation == n1
    assert src.record.objective == pytest.approx(3.21) and src.record.hparams["base"] == 1
    n2, _ = generation(eng, reg, tmp_path, WORSE, reference=line_level(AS_GOOD[0], 3.21))
    assert not line.advance(n2) and line.source().record.generation == n1  # worse: the head stays
    n3, ckpt3 = generation(eng, reg, tmp_path, [2.9, 2.95], reference=3.21)
    assert line.advance(n3) and reg.best().generation == n3 and line.source().path == reg.best_path
    ckpt3.unlink()  # a new best's own file may go: best_model.pt is the copy the line starts from
    assert line.source().path == reg.best_path


def test_without_a_margin_or_with_its_checkpoint_gone_the_line_starts_from_the_best(study, tmp_path):
    eng, reg, _ = study
    n0, _ = generation(eng, reg, tmp_path, LINE)
    n1, ckpt1 = generation(eng, reg, tmp_path, AS_GOOD[0], reference=line_level(LINE, 3.04))
    assert not LineHead(eng, reg, dict, None).advance(n1)  # warm_prune_sigmas: null
    assert LineHead(eng, reg, dict, 2.0).advance(n1)
    ckpt1.unlink()  # the head's kept checkpoint was deleted: fall back to best_model.pt
    src = LineHead(eng, reg, dict, 2.0).source()
    assert src.record.generation == n0 and not src.is_head
