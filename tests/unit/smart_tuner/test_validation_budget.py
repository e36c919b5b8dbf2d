"""The early-stop horizon's budget in validations, from the generation's epoch budget."""

from __future__ import annotations

import pytest

from ttsops.smart_tuner.tuner import validation_budget


@pytest.mark.parametrize(
    ("epochs_logged", "budget", "expected"),
    [
        ([1.0, 2.0], 6, 6),  # one validation per epoch: the epoch budget
        ([1 / 3, 2 / 3, 1.0], 6, 18),  # val_every_steps: 3 validations per epoch so far
        ([2.0, 4.0], 8, 4),  # val_every_epochs=2
        ([], 6, 6),  # nothing logged yet
        ([0.0], 6, 6),  # no epoch progress yet
    ],
)
def test_validation_budget(epochs_logged, budget, expected):
    assert validation_budget([{"epoch": e} for e in epochs_logged], budget) == expected
