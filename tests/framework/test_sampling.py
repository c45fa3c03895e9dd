"""The samplers' array forms against the list forms they replace (the batches of a small data
set must stay those of earlier versions: the results in BENCHMARKS.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers.trainer_pt_utils import get_length_grouped_indices

from framework.sampling import TrainBatchSampler, length_grouped_order, token_budget_batches


def _lengths(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(2, 64, n)  # many ties


@pytest.mark.parametrize("n", [1, 7, 200, 3001])
@pytest.mark.parametrize("batch_size", [1, 8, 64])
def test_length_grouped_order_is_transformers_order(n, batch_size):
    lengths = _lengths(n)
    ours = length_grouped_order(lengths, batch_size, torch.Generator().manual_seed(5))
    theirs = get_length_grouped_indices(
        lengths.tolist(), batch_size, generator=torch.Generator().manual_seed(5)
    )
    assert ours.tolist() == theirs


def _greedy(lengths: list[int], max_tokens: int, seed: int) -> list[list[int]]:
    """The per-example loop ``token_budget_batches`` replaced."""
    tie = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(seed)).tolist()
    batches, batch, longest = [], [], 0
    for i in sorted(range(len(lengths)), key=lambda i: (lengths[i], tie[i])):
        if batch and (len(batch) + 1) * max(longest, lengths[i]) > max_tokens:
            batches.append(batch)
            batch, longest = [], 0
        batch.append(i)
        longest = max(longest, lengths[i])
    return [*batches, batch] if batch else batches


@pytest.mark.parametrize("n", [1, 50, 2000])
@pytest.mark.parametrize("max_tokens", [40, 63, 500])  # 40, 63: some examples alone in a batch
def test_token_budget_batches_are_the_greedy_cut(n, max_tokens):
    lengths = _lengths(n, seed=1)
    ours = [b.tolist() for b in token_budget_batches(lengths, max_tokens, seed=2)]
    assert ours == _greedy(lengths.tolist(), max_tokens, seed=2)


def test_train_order_is_a_seeded_permutation_dealt_across_processes():
    n = 103
    one = TrainBatchSampler(_lengths(n), 4, seed=9, num_replicas=1)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(9)).tolist()
    assert [i for b in one.batches(0) for i in b] == perm
    two = [TrainBatchSampler(_lengths(n), 2, seed=9, num_replicas=2, rank=r) for r in (0, 1)]
    wrapped = (perm + perm)[:104]  # 52 per process: the first example again
    assert [i for b in two[0].batches(0) for i in b] == wrapped[0::2]
    assert [i for b in two[1].batches(0) for i in b] == wrapped[1::2]
    assert isinstance(one.lengths, np.ndarray) and one.order(0).dtype == np.int64
