"""A warm start whose tensors all fit carries Adam's moments under the new hyperparameters."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ttsops.train.checkpoint import carry_optimizer_state
from ttsops.train.hparams import HParams
from ttsops.train.trainer import lr_lambda


def _trained(lr: float, shape: tuple[int, int] = (4, 3)) -> tuple[nn.Module, torch.optim.Adam]:
    torch.manual_seed(0)
    model = nn.Linear(*shape)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-6)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(8, shape[0])).pow(2).sum().backward()
        opt.step()
    return model, opt


def test_moments_and_step_counts_come_over_and_the_new_learning_rate_stays():
    _, old = _trained(3e-3)
    saved = old.state_dict()
    model = nn.Linear(4, 3)
    new = torch.optim.Adam(model.parameters(), lr=5e-4, weight_decay=0.0)
    torch.optim.lr_scheduler.LambdaLR(new, lr_lambda(HParams(lr_warmup_steps=10)))  # sets initial_lr, lr
    assert carry_optimizer_state(new, saved)
    for p_new, p_old in zip(model.parameters(), old.param_groups[0]["params"], strict=True):
        assert torch.equal(new.state[p_new]["exp_avg"], old.state[p_old]["exp_avg"])
        assert torch.equal(new.state[p_new]["exp_avg_sq"], old.state[p_old]["exp_avg_sq"])
        assert float(new.state[p_new]["step"]) == 3.0
    g = new.param_groups[0]
    assert (g["initial_lr"], g["weight_decay"]) == (5e-4, 0.0)
    assert g["lr"] == pytest.approx(5e-4 * 0.1)  # the new schedule's first warm-up step, not the checkpoint's rate


def test_a_state_that_does_not_fit_changes_nothing():
    _, old = _trained(3e-3, shape=(4, 3))
    model = nn.Linear(5, 3)  # another input width: the moments' shapes differ
    new = torch.optim.Adam(model.parameters(), lr=5e-4)
    assert not carry_optimizer_state(new, old.state_dict())
    assert not new.state and new.param_groups[0]["lr"] == 5e-4
    assert not carry_optimizer_state(new, None)
    assert not carry_optimizer_state(new, {"state": {}, "param_groups": []})
