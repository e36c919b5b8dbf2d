"""Exact resume across precisions: a checkpoint written without a GradScaler (CPU, fp32, bf16) resumed
where fp16 needs one, and the other way round. torch runs an enabled GradScaler on the CPU, so both
sides are real Trainers with the tiny model; the fp16 side is a Trainer whose scaler is enabled."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import TINY
from ttsops.data.dataset import collate
from ttsops.train.distributed import DistInfo
from ttsops.train.hparams import HParams
from ttsops.train.trainer import Trainer, restore_scaler


def _trainer(scaler: bool) -> Trainer:
    t = Trainer(HParams().replace(**TINY), torch.device("cpu"), DistInfo(), False, False)
    if scaler:  # what a GPU without bf16 gets (Trainer enables it for fp16 autocast only)
        t.scaler = torch.amp.GradScaler("cpu", enabled=True, init_scale=2.0**10)
    return t


def _batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    items = [(torch.randint(1, 30, (n,), generator=g), torch.randn(80, 3 * n, generator=g)) for n in (7, 9)]
    return collate(items, 3)


def _trained_state(scaler: bool) -> dict:
    t = _trainer(scaler)
    t.train_step(_batch())
    return t.state_dict("config: {}")


def test_fp32_checkpoint_resumes_where_fp16_needs_a_scaler():
    state = _trained_state(scaler=False)
    assert state["scaler"] == {}  # a disabled scaler saves nothing
    t = _trainer(scaler=True)
    t.load_state_dict(state)  # load_state_dict({}) on an enabled scaler raises; restore skips it
    assert t.progress.step == 1 and t.scaler.get_scale() == 2.0**10  # fresh scaler, the rest resumed
    for k, v in state["model"].items():
        assert torch.equal(t.model.state_dict()[k], v), k
    assert torch.isfinite(torch.tensor(t.train_step(_batch())["train_loss"]))
    assert t.progress.step == 2


def test_fp16_checkpoint_resumes_without_a_scaler():
    state = _trained_state(scaler=True)
    assert state["scaler"]["scale"] > 0
    t = _trainer(scaler=False)
    t.load_state_dict(state)
    assert t.progress.step == 1 and not t.scaler.is_enabled()
    assert t.train_step(_batch())["train_loss"] > 0


def test_fp16_to_fp16_restores_the_scale():
    state = _trained_state(scaler=True)
    state["scaler"]["scale"] = 123.0
    t = _trainer(scaler=True)
    t.load_state_dict(state)
    assert t.scaler.get_scale() == 123.0


def test_restore_scaler_table():
    on = torch.amp.GradScaler("cpu", enabled=True)
    saved = {**on.state_dict(), "scale": 8.0}
    cases = [(True, saved, True), (True, {}, False), (True, None, False), (False, saved, False), (False, {}, False)]
    for enabled, state, loaded in cases:
        scaler = torch.amp.GradScaler("cpu", enabled=enabled)
        assert restore_scaler(scaler, state) is loaded, (enabled, state)
        if loaded:
            assert scaler.get_scale() == 8.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (benchmarks/gpu_check.sh's amp check runs it too)")
def test_checkpoint_loaded_onto_the_gpu_restores_its_rng_state(tmp_path):
    """A resume loads the checkpoint with map_location=cuda, which moves the CPU generator states too."""
    from ttsops.model.checkpoint import load_checkpoint
    from ttsops.train.trainer import rng_state, set_rng_state

    torch.save({"model": {}, "rng": rng_state()}, tmp_path / "c.pt")
    expected = torch.rand(3)
    set_rng_state(load_checkpoint(tmp_path / "c.pt", map_location="cuda")["rng"])
    assert torch.equal(torch.rand(3), expected)
