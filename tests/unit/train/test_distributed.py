"""Device choice and batch sharding for DDP: every rank gets its own GPU and the same number of batches."""

from __future__ import annotations

import torch

from ttsops.data.dataset import BucketBatchSampler
from ttsops.train.distributed import resolve_device


def test_a_bare_cuda_means_the_worker_s_own_gpu() -> None:
    assert resolve_device("cuda", 3) == torch.device("cuda:3")
    assert resolve_device("cuda:1", 3) == torch.device("cuda:1")  # pinned on purpose
    assert resolve_device("cpu", 3) == torch.device("cpu")


def test_every_rank_gets_the_same_number_of_batches_even_with_fewer_batches_than_ranks() -> None:
    for n_items, world in ((48, 2), (48, 7), (10, 4), (3, 8)):
        per_rank = [list(BucketBatchSampler([100 + i for i in range(n_items)], 8, seed=0, rank=r, world=world))
                    for r in range(world)]
        counts = {len(b) for b in per_rank}
        assert len(counts) == 1 and counts.pop() >= 1, (n_items, world, [len(b) for b in per_rank])
