"""Seeding, the weights fingerprint and the records a run makes for ttsops reproduce."""

from __future__ import annotations

import json
import random

import numpy as np
import torch

from ttsops.infra.tracking import Tag
from ttsops.train.reproducibility import WARM_START_SEEDS, record_tags, seed_everything, weights_digest


def draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_every_generator_is_seeded():
    seed_everything(7)
    first = draws()
    seed_everything(7)
    assert draws() == first
    seed_everything(8)
    assert all(a != b for a, b in zip(draws(), first, strict=True))


def test_the_weights_digest_sees_one_bit_and_ignores_order():
    torch.manual_seed(0)
    w = {"a.weight": torch.randn(3, 4), "a.bias": torch.randn(4), "n": torch.tensor(5), "h": torch.randn(2).half()}
    d = weights_digest(w)
    assert d == weights_digest(dict(reversed(list(w.items())))) == weights_digest({k: v.clone() for k, v in w.items()})
    flipped = w["a.bias"].clone()
    flipped.view(torch.int32)[0] ^= 1  # the lowest bit of one float
    assert weights_digest({**w, "a.bias": flipped}) != d
    assert weights_digest({**w, "a.weight": w["a.weight"].reshape(4, 3)}) != d  # same bytes, other shape
    assert weights_digest({**w, "n": torch.tensor(5, dtype=torch.int32)}) != d


def test_record_tags_say_how_to_rerun():
    tags = record_tags(1234, "bucket-shuffle/1 ...", "sha1-id/1 ...", torch.device("cpu"), False, 1)
    assert json.loads(tags[Tag.SEEDS]) == {"python": 1234, "numpy": 1234, "torch": 1234, "data_order": "1234 + epoch",
                                           "warm_start": WARM_START_SEEDS}
    assert tags[Tag.TORCH_THREADS] == str(torch.get_num_threads()) and tags[Tag.DEVICE].startswith("cpu (")
    assert tags[Tag.DETERMINISTIC] == "false" and tags[Tag.WORLD_SIZE] == "1"
    libs = json.loads(tags[Tag.LIBRARIES])
    assert libs["torch"] == torch.__version__ and {"python", "numpy", "mlflow", "ttsops"} <= set(libs)
