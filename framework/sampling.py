"""Batches: which examples each process trains and evaluates on, in which order, and where a
resumed epoch starts.

Written here because torch's ``DistributedSampler`` and transformers' length-grouped samplers
neither deal global batches across processes the way ``TrainBatchSampler`` does nor skip to a
position inside an epoch, and evaluation needs the same number of batches on every process.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler


def batches_per_rank(n: int, world_size: int, batch_size: int) -> int:
    """Training batches per epoch of each process (examples wrap around to even out ranks)."""
    per_rank = -(-n // world_size)
    return -(-per_rank // batch_size)


def eval_batches(n: int, batch_size: int, world: int, rank: int) -> list[list[int]]:
    """Process ``rank``'s evaluation batches of examples ``0..n-1`` (sorted by length).

    Each example is evaluated exactly once (no padding duplicates, unlike DistributedSampler;
    metrics sync their states), and every process gets the same number of batches: under FSDP
    each forward is a collective, and a process with one batch more would wait forever. The n
    examples are cut into ``world`` x k contiguous batches of near-equal size, at most
    ``batch_size`` (k = ceil(n / (world * batch_size))); only when that leaves fewer than one
    example per batch (n < world * k) are there fewer, larger batches. Batch i goes to process
    i % world, so each process gets long and short ones alike. Needs n >= world.
    """
    per_rank = max(1, min(-(-n // (world * batch_size)), n // world))
    total = per_rank * world
    sizes = [n // total + (i < n % total) for i in range(total)]
    starts = [0, *itertools.accumulate(sizes)]
    batches = [list(range(starts[i], starts[i + 1])) for i in range(total)]
    return batches[rank::world]


def token_budget_batches(
    lengths: Sequence[int] | np.ndarray, max_tokens: int, seed: int
) -> list[np.ndarray]:
    """Batches of examples of similar length, each at most ``max_tokens`` padded tokens
    (examples x its longest), every example in exactly one. Examples are sorted by length (ties
    in an order seeded by ``seed``) and cut greedily, as fairseq's ``max_tokens`` batching."""
    lengths = np.asarray(lengths, dtype=np.int64)
    tie = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(seed)).numpy()
    order = np.lexsort((tie, lengths))  # by length, then by the seeded tie order
    ordered = lengths[order]
    # Sorted ascending, a batch's longest example is its last: the batch from ``start`` holds
    # examples start..j while (j - start + 1) * ordered[j] <= max_tokens, which grows with j,
    # so each cut is a binary search (one Python step per batch, not per example).
    cuts, start, n = [], 0, len(ordered)
    while start < n:
        lo, hi = start + 1, n  # the first j that no longer fits, searched in (start, n]
        while lo < hi:
            mid = (lo + hi) // 2
            if (mid - start + 1) * ordered[mid] > max_tokens:
                hi = mid
            else:
                lo = mid + 1
        cuts.append(lo)
        start = lo
    return np.split(order, cuts[:-1]) if cuts else []


def length_grouped_order(
    lengths: np.ndarray, batch_size: int, generator: torch.Generator
) -> np.ndarray:
    """The order of transformers' ``get_length_grouped_indices`` (the HF Trainer's
    ``group_by_length``: mega-batches of a random permutation, each sorted by length, longest
    first, the longest example of all moved to the front), computed with arrays instead of one
    Python int per example; equal to it index for index (tests/framework/test_sampling.py)."""
    n = len(lengths)
    mult = max(min(n // (batch_size * 4), 50), 1)
    size = mult * batch_size
    perm = torch.randperm(n, generator=generator).numpy()
    mega = np.arange(n) // size
    # stable: equal lengths keep the permutation's order, as Python's sorted(reverse=True)
    order = perm[np.lexsort((-lengths[perm], mega))]
    firsts = np.arange(0, n, size)
    longest = firsts[int(np.argmax(lengths[order[firsts]]))]
    order[[0, longest]] = order[[longest, 0]]
    return order


# Above this many examples an epoch's order is computed batch by batch (``lazy_permutation``)
# instead of held as an array (8 bytes per example: 10^9 examples would be 8 GB per process).
# At or below it the order is torch.randperm's, so the batches of every data set of today's
# size are unchanged.
LAZY_ROWS = 1 << 26


def lazy_permutation(positions: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Where a seeded permutation of ``0..n-1`` sends each of ``positions``, computed for those
    positions alone (O(len(positions)) memory, whatever ``n``): a 6-round Feistel network over
    the smallest even number of bits that holds ``n``, cycle-walked back into ``0..n-1`` (a
    value >= n is encrypted again; the domain is under 4n, so few walks). A bijection for every
    ``n`` and ``seed``, as Megatron-LM and MosaicML streaming need for corpora whose index
    arrays would not fit. Written here because neither numpy nor torch has a seekable
    permutation."""
    bits = max(2, (int(n - 1).bit_length() + 1) // 2 * 2)
    half, mask = bits // 2, np.uint64((1 << (bits // 2)) - 1)
    keys = np.random.default_rng(seed).integers(0, 1 << 62, size=6, dtype=np.uint64)
    c1, c2, s = np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53), np.uint64(33)

    def encrypt(x: np.ndarray) -> np.ndarray:
        left, right = x >> np.uint64(half), x & mask
        for key in keys:  # round function: murmur3's 64-bit finaliser of right + key
            z = right + key
            z = (z ^ (z >> s)) * c1
            z = (z ^ (z >> s)) * c2
            left, right = right, left ^ ((z ^ (z >> s)) & mask)
        return (left << np.uint64(half)) | right

    out = encrypt(np.asarray(positions, dtype=np.uint64))
    walk = out >= n
    while walk.any():
        out[walk] = encrypt(out[walk])
        walk = out >= n
    return out.astype(np.int64)


class EpochPosition:
    """The place inside the training epoch (epoch E, N batches trained) of the data module that
    owns it: counted on the current training sampler, saved in checkpoints, handed to the next
    sampler on resume, and checked against the settings that decide which rows N batches hold."""

    def __init__(self) -> None:
        self.sampler: TrainBatchSampler | None = None
        self.resume_at: tuple[int, int] | None = None  # (epoch, batches trained), restored

    def attach(self, sampler: TrainBatchSampler) -> None:
        """The new training loader's sampler: it starts at a restored position, once."""
        sampler.resume_at, self.resume_at = self.resume_at, None
        self.sampler = sampler

    def batch_trained(self) -> None:
        if self.sampler is not None:
            self.sampler.progress[1] += 1

    def state_dict(self, settings: dict[str, Any]) -> dict[str, Any]:
        if self.sampler is None:
            return {}
        epoch, batches = self.sampler.progress
        return {
            "train_position": {"epoch": epoch, "batches": batches},
            "position_settings": settings,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        position = state.get("train_position")
        if position is not None:
            self.resume_at = (position["epoch"], position["batches"])

    @staticmethod
    def check(state: dict[str, Any], now: dict[str, Any]) -> None:
        """A ``UserError`` when a checkpoint's position (N batches trained) was saved with
        settings that make other batches here: resuming would skip the wrong rows. Checkpoints
        of older versions, without the settings, are not checked."""
        from framework.errors import UserError

        saved = state.get("position_settings") or {}
        differ = [f"{k} {saved[k]} there, {now[k]} here" for k in saved if saved[k] != now.get(k)]
        if differ:
            raise UserError(
                f"the checkpoint's place in the epoch was saved with other data settings "
                f"({'; '.join(differ)}): resume with the run's settings (its config.yaml), or "
                "start a new run directory"
            )


class TrainBatchSampler(Sampler[list[int]]):
    """Training batches of a seeded order per epoch, split across processes, resumable in O(1).

    The order is a permutation seeded by ``seed + epoch`` or, with ``group_by_length``, shuffled
    mega-batches sorted by length (as the HF Trainer's ``group_by_length``). Each global batch of
    ``batch_size * num_replicas`` consecutive examples is dealt out across the processes, so N
    processes with batch B see exactly the batches of one process with batch N*B. Resuming
    skips the batches already trained by index: no batch is loaded to skip it.

    With ``max_tokens`` (a token budget), batches are ``token_budget_batches``: fixed once, of
    varying size, similar lengths inside each; every epoch shuffles their order (seeded by
    ``seed + epoch``) and deals whole batches round-robin to the processes.

    ``lengths`` may be the number of examples instead, when neither length grouping nor a token
    budget needs their lengths; above ``LAZY_ROWS`` examples the plain order is then computed
    batch by batch (``lazy_permutation``): nothing per example is held.

    Written here because torch's ``DistributedSampler`` and transformers' length-grouped samplers
    neither deal global batches this way nor skip to a position inside an epoch.
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray | int,
        batch_size: int,
        seed: int = 0,
        group_by_length: bool = False,
        num_replicas: int = 1,
        rank: int = 0,
        max_tokens: int | None = None,
    ) -> None:
        # lengths and orders are arrays: no Python int per example (a corpus of 10^8 rows)
        if isinstance(lengths, int):
            if group_by_length or max_tokens:
                raise ValueError("length grouping and token budgets need the examples' lengths")
            self.lengths, self.n = None, lengths
        else:
            self.lengths = np.asarray(lengths, dtype=np.int64)
            self.n = len(self.lengths)
        self.batch_size, self.seed = batch_size, seed
        self.budget = token_budget_batches(lengths, max_tokens, seed) if max_tokens else None
        self.group_by_length = group_by_length
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0
        self.epoch_fn = None  # when set (by the data module), the epoch comes from the trainer
        self.resume_at: tuple[int, int] | None = None  # (epoch, batches already trained)
        # [epoch, batches trained in it]: counted by ``DataModule.batch_trained``, saved by
        # ``DataModule.state_dict``.
        self.progress = [0, 0]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self, epoch: int) -> np.ndarray:
        """This process's examples of ``epoch``, in order."""
        g = torch.Generator().manual_seed(self.seed + epoch)
        n, world = self.n, self.num_replicas
        if self.group_by_length:
            order = length_grouped_order(self.lengths, self.batch_size * world, g)
        else:
            order = torch.randperm(n, generator=g).numpy()
        # Every process gets as many examples (as DistributedSampler does): wrap around.
        order = np.resize(order, -(-n // world) * world)
        return order[self.rank :: world]

    def batches(self, epoch: int, start: int = 0):
        """This process's batches of ``epoch`` from batch ``start`` on, in order (an iterator
        of lists of example indices)."""
        size, world = self.batch_size, self.num_replicas
        if self.budget is None and self.lengths is None and self.n > LAZY_ROWS:
            per_rank = -(-self.n // world)  # as order(): every process as many, wrapping around
            for b in range(start, len(self)):
                mine = np.arange(b * size, min((b + 1) * size, per_rank), dtype=np.int64)
                yield lazy_permutation((mine * world + self.rank) % self.n, self.n,
                                       self.seed + epoch).tolist()  # fmt: skip
            return
        if self.budget is None:
            mine = self.order(epoch)
            for b in range(start, len(self)):
                yield mine[b * size : (b + 1) * size].tolist()
            return
        g = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(len(self.budget), generator=g).numpy()
        # every process as many batches: wrap around
        order = np.resize(order, len(self) * self.num_replicas)[self.rank :: self.num_replicas]
        for i in order[start:]:
            yield self.budget[i].tolist()

    def __len__(self) -> int:
        if self.budget is not None:
            return -(-len(self.budget) // self.num_replicas)
        return batches_per_rank(self.n, self.num_replicas, self.batch_size)

    def __iter__(self):
        epoch = self.epoch_fn() if self.epoch_fn is not None else self.epoch
        start = 0
        if self.resume_at is not None and self.resume_at[0] == epoch:
            start = self.resume_at[1]
        self.resume_at = None
        self.progress = [epoch, start]
        yield from self.batches(epoch, start)
