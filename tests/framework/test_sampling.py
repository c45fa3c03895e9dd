"""The samplers' array forms against the list forms they replace (the batches of a small data
set must stay those of earlier versions: the results in BENCHMARKS.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers.trainer_pt_utils import get_length_grouped_indices

from framework.sampling import (
    TrainBatchSampler,
    lazy_permutation,
    length_grouped_order,
    token_budget_batches,
)


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


@pytest.mark.parametrize("n", [1, 2, 5, 1000, 12_345])
def test_the_lazy_permutation_is_a_seeded_bijection(n):
    perm = lazy_permutation(np.arange(n), n, seed=4)
    assert sorted(perm.tolist()) == list(range(n))
    assert (lazy_permutation(np.arange(n), n, seed=4) == perm).all()  # the seed decides it
    if n >= 1000:
        assert (lazy_permutation(np.arange(n), n, seed=5) != perm).mean() > 0.99
        # shuffled: a random permutation's correlation with its positions is ~0.8/sqrt(n)
        assert abs(float(np.corrcoef(np.arange(n), perm)[0, 1])) < 4 / n**0.5
    part = np.array([n - 1, 0, n // 2])
    assert (lazy_permutation(part, n, seed=4) == perm[part]).all()  # any positions alone


def test_above_lazy_rows_batches_are_dealt_and_resumed_without_an_array(monkeypatch):
    monkeypatch.setattr("framework.sampling.LAZY_ROWS", 100)
    n = 1003
    perm = lazy_permutation(np.arange(n), n, seed=9 + 1).tolist()  # epoch 1: seed + 1
    one = TrainBatchSampler(n, 4, seed=9)  # the number of examples, no lengths
    assert [i for b in one.batches(1) for i in b] == perm
    two = [TrainBatchSampler(n, 2, seed=9, num_replicas=2, rank=r) for r in (0, 1)]
    wrapped = (perm + perm)[:1004]  # 502 per process: the first example again
    assert [i for b in two[0].batches(1) for i in b] == wrapped[0::2]
    assert [i for b in two[1].batches(1) for i in b] == wrapped[1::2]
    assert list(two[1].batches(1, start=7)) == list(two[1].batches(1))[7:]  # resume


def test_an_epoch_of_a_billion_examples_holds_nothing_per_example():
    import tracemalloc

    sampler = TrainBatchSampler(10**9, 32, seed=0, num_replicas=8, rank=3)
    tracemalloc.start()
    try:
        batches = sampler.batches(0, start=len(sampler) - 2)  # resumed near the end
        last = [next(batches), next(batches)]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(sampler) == 3_906_250 and [len(b) for b in last] == [32, 32]
    assert all(0 <= i < 10**9 for b in last for i in b)
    assert peak < 1 << 20, peak  # well under a megabyte (an array would be 8 GB)
