"""KeptCheckpoint against real files: what a trainer's rotation and state writes can do to it."""

from __future__ import annotations

import json
from pathlib import Path

from ttsops.smart_tuner.trainer.kept import KEPT_DIR, KeptCheckpoint, Validation
from ttsops.train.adapter import Tacotron2Adapter
from ttsops.train.checkpoint import STATE, checkpoint_path


def _v(index: int, step: int, value: float) -> Validation:
    return Validation(index, index, step, value, {"val_loss": value})


def _write(gen: Path, step: int, state: bool = True) -> Path:
    p = checkpoint_path(gen, step)
    p.write_bytes(f"weights at {step}".encode())
    if state:
        (gen / STATE).write_text(json.dumps({"step": step, "epoch": step // 10, "last_checkpoint": str(p)}))
    return p


def _kept(gen: Path) -> KeptCheckpoint:
    a = Tacotron2Adapter()
    return KeptCheckpoint(gen, a.checkpoint_at, a.train_state)


def test_the_best_validation_survives_rotation_with_its_own_state(tmp_path):
    k = _kept(tmp_path)
    src = _write(tmp_path, 10)
    k.offer(_v(1, 10, 3.0))
    src.unlink()  # the trainer's rotation
    _write(tmp_path, 20)
    k.offer(_v(2, 20, 4.0))  # worse: not kept
    assert k.kept is not None and k.kept.validation.step == 10
    assert k.kept.path.read_bytes() == b"weights at 10"
    state = json.loads((tmp_path / KEPT_DIR / STATE).read_text())
    assert state["step"] == 10 and state["epoch"] == 1 and state["last_checkpoint"] == str(k.kept.path)


def test_a_validation_is_kept_once_its_checkpoint_and_state_are_written(tmp_path):
    k = _kept(tmp_path)
    _write(tmp_path, 10)
    k.offer(_v(1, 10, 3.0))
    k.offer(_v(2, 20, 2.0))  # metrics logged, checkpoint not written yet
    assert k.kept is not None and k.kept.validation.step == 10 and k.pending is not None
    checkpoint_path(tmp_path, 20).write_bytes(b"weights at 20")  # checkpoint there, state still at 10
    k.try_keep()
    assert k.kept.validation.step == 10
    _write(tmp_path, 20)
    k.try_keep()
    assert k.kept.validation.step == 20 and k.pending is None
    assert k.kept.path.read_bytes() == b"weights at 20"


def test_a_step_the_trainer_has_moved_past_is_given_up(tmp_path):
    k = _kept(tmp_path)
    _write(tmp_path, 10)
    k.offer(_v(1, 10, 3.0))
    k.offer(_v(2, 20, 2.0))
    _write(tmp_path, 30)  # 20's checkpoint never seen, the state already at 30
    k.try_keep()
    assert k.pending is None and k.kept is not None and k.kept.validation.step == 10
    _write(tmp_path, 40)
    k.offer(_v(4, 40, 2.5))  # beats the kept one (3.0), not the given-up 2.0: kept
    assert k.kept.validation.step == 40


def test_a_trainer_without_step_checkpoints_keeps_nothing(tmp_path):
    k = KeptCheckpoint(tmp_path, lambda d, s: None, lambda d: None)
    _write(tmp_path, 10)
    k.offer(_v(1, 10, 3.0))
    assert k.kept is None and not (tmp_path / KEPT_DIR).exists()
