"""The data module's loaders (``framework.data.DataModule``): training batches from
``TrainBatchSampler`` (seeded, dealt to the DDP ranks, resumable mid-epoch), evaluation and
prediction longest-first."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from framework.errors import UserError
from framework.sampling import TrainBatchSampler, eval_batches


def make_loader(dm: Any, split: str) -> DataLoader:
    """The loader of ``dm``'s encoded ``split`` (train, val, test or predict)."""
    pad_id = dm.tokenizer.pad_token_id or 0
    features = dm.splits[split]
    trainer = getattr(dm, "trainer", None)
    world, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
    collate = partial(dm.task.collate, pad_id=pad_id)
    # The DataLoader's own generator: creating an iterator draws no number from the global RNG
    # (which a resumed run must find as it was saved).
    common = {"collate_fn": collate, "num_workers": dm.num_workers,
              "persistent_workers": dm.num_workers > 0,
              "generator": torch.Generator().manual_seed(dm.seed)}  # fmt: skip
    if split == "train":
        sampler = TrainBatchSampler(
            # lengths only where the batching reads them: else the count (nothing per row)
            dm.lengths(split) if dm.length_grouping or dm.max_tokens else len(features),
            dm.batch_size,
            seed=dm.seed,
            group_by_length=dm.length_grouping,
            num_replicas=world,
            rank=rank,
            max_tokens=dm.max_tokens,
        )
        if trainer is not None:  # the epoch Lightning is in
            loops = trainer.fit_loop
            sampler.epoch_fn = lambda: loops.epoch_progress.current.processed
        dm.position.attach(sampler)
        return DataLoader(features, batch_sampler=sampler, **common)
    # Evaluation order does not change any metric: longest first, least padding.
    order = np.argsort(-dm.lengths(split), kind="stable")  # stable: ties in file order
    if split == "predict":  # one process; Lightning wraps this loader's own batch sampler
        features = [features[i] for i in order.tolist()]
        return DataLoader(features, batch_size=dm.eval_batch_size, collate_fn=collate)
    if len(features) < world:
        raise UserError(
            f"the {split} split has {len(features)} examples for {world} processes; each "
            "needs at least one: use more examples (data.max_eval_samples) or fewer devices"
        )
    batches = eval_batches(len(features), dm.eval_batch_size, world, rank)
    return DataLoader(features, batch_sampler=[order[b].tolist() for b in batches], **common)
