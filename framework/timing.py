"""``train_seconds``: the time a run spends in its training batches.

From the start of each training batch (after it is loaded) to the end of its optimizer step:
forward, backward, gradient clipping, optimizer, logging. Validation, checkpoint writes and data
loading fall outside, so the number compares across runs that validate or checkpoint
differently, and with the HF Trainer's ``on_step_begin``..``on_step_end`` span.

``gemm_flops_per_token``: the FLOPs the benchmarks' MFU counts for one trained token.
"""

from __future__ import annotations

import time

import lightning as L


class TrainTimer(L.Callback):
    """Sums the wall time of every training batch of this process into ``seconds``.

    Lightning runs checkpoint callbacks after all others, so a checkpoint written at the end of a
    batch is not counted."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.batches = 0
        self._start: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._start is not None:
            self.seconds += time.perf_counter() - self._start
            self.batches += 1
            self._start = None


def gemm_flops_per_token(cfg) -> int:
    """Forward + backward FLOPs of an encoder's GEMMs per token (6 x the non-embedding weights:
    qkv, attention output, MLP in and out); attention scores and heads are not counted."""
    h, inter = cfg.hidden_size, cfg.intermediate_size
    return 6 * cfg.num_layers * (4 * h * h + 2 * h * inter)
