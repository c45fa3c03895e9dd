"""Callbacks that tests add to a real run from the command line (``+callbacks.NAME._target_=
tests.callbacks.CLASS``): they observe or break one process of a (multi-process) run."""

from __future__ import annotations

import json
import os
import signal

import torch
from lightning.pytorch import Callback


class SaveFirstGradients(Callback):
    """Saves the gradients of the first optimizer step, after the all-reduce of every process
    and before clipping, to ``path`` (first process only)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if trainer.global_step == 0 and trainer.is_global_zero:
            grads = {
                n: p.grad.clone() for n, p in pl_module.named_parameters() if p.grad is not None
            }
            torch.save(grads, self.path)


class NanLossOnRank(Callback):
    """From optimizer step ``step`` on, process ``rank``'s head outputs (so its loss) are NaN."""

    def __init__(self, rank: int = 1, step: int = 1) -> None:
        self.rank, self.step = rank, step
        self.hooked = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if (
            trainer.global_rank == self.rank
            and trainer.global_step >= self.step
            and not self.hooked
        ):
            pl_module.head.register_forward_hook(lambda m, args, out: out * float("nan"))
            self.hooked = True


class SaveFinalWeights(Callback):
    """Saves the weights and step at the end of training to ``path`` (first process only):
    the run's final state, which no checkpoint holds when the last epoch did not improve."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            state = {k: v.clone() for k, v in pl_module.state_dict().items()}
            torch.save({"global_step": trainer.global_step, "state_dict": state}, self.path)


class SigtermAt(Callback):
    """Sends SIGTERM to its own process after optimizer step ``step`` (as a scheduler would):
    deterministic, unlike a signal from outside that lands at any batch."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args, **kwargs) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


class RecordTrainRows(Callback):
    """Appends the row ids of each trained batch of this process to ``path``.RANK.jsonl, and
    writes ``path``.RANK.json at the end: the Arrow files its train split is mapped from, and
    whether this process prepared the data."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        with open(f"{self.path}.{trainer.global_rank}.jsonl", "a") as f:
            f.write(json.dumps(batch["row"].tolist()) + "\n")

    def on_train_end(self, trainer, pl_module) -> None:
        dm = trainer.datamodule
        files = [f["filename"] for f in dm.splits["train"].cache_files]
        record = {"files": files, "prepared_here": dm.prepared_here}
        with open(f"{self.path}.{trainer.global_rank}.json", "w") as f:
            json.dump(record, f)
