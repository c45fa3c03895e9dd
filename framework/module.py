"""The one generic LightningModule: encoder + a task's head, optimised with AdamW.

Tasks never subclass this. Optimisation (AdamW, linear warm-up then linear decay, no weight decay
on biases and LayerNorm), logging and metric syncing live here once; precision and parallelism are
Trainer config.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.utilities import GradClipAlgorithmType
from torch import nn
from torchmetrics import MetricCollection
from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

from framework.encoder import Encoder
from framework.errors import UserError
from framework.families import get_family
from framework.heads import HeadStyle
from framework.task import Batch, Prediction, StepOutput, Task

# Devices with torch's fused AdamW kernel (torch >= 2.4). torch checks only at the first step.
FUSED_DEVICES = ("cpu", "cuda", "mps", "xpu", "hpu")


def adamw(
    groups: list[dict], lr: float, betas: tuple[float, float], eps: float, fused: bool | None
) -> torch.optim.AdamW:
    """AdamW; ``fused`` (one kernel over all parameters, what the HF Trainer uses by default):
    None = where every parameter's device and dtype support it, else the foreach one."""
    params = [p for g in groups for p in g["params"]]
    supported = all(p.device.type in FUSED_DEVICES and p.is_floating_point() for p in params)
    if fused and not supported:
        kinds = sorted({f"{p.dtype} on {p.device.type}" for p in params})
        raise UserError(
            f"optim.fused=true: no fused AdamW kernel for {', '.join(kinds)}; use "
            "optim.fused=null (fused where supported) or optim.fused=false"
        )
    use_fused = supported if fused is None else fused
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=use_fused or None)


class TaskModule(L.LightningModule):
    def __init__(
        self,
        encoder: Encoder,
        task: Task,
        head: nn.Module,
        lr: float = 5e-5,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        head_lr_scale: float = 1.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        fused: bool | None = None,
    ) -> None:
        super().__init__()
        for name, value, ok, rule in (
            ("lr", lr, lr > 0, "> 0"),
            ("weight_decay", weight_decay, weight_decay >= 0, ">= 0"),
            ("warmup_ratio", warmup_ratio, 0 <= warmup_ratio <= 1, "in [0, 1]"),
            ("head_lr_scale", head_lr_scale, head_lr_scale > 0, "> 0"),
            ("eps", eps, eps > 0, "> 0"),
            ("betas", tuple(betas), all(0 <= b < 1 for b in betas), "in [0, 1)"),
        ):
            if not ok:
                raise UserError(f"optim.{name} must be {rule}, got {value}")
        self.encoder, self.task, self.head = encoder, task, head
        task.tie_weights(head, encoder)  # e.g. an MLM decoder shares the input embeddings
        self.lr, self.weight_decay, self.warmup_ratio = lr, weight_decay, warmup_ratio
        self.head_lr_scale = head_lr_scale
        self.betas, self.eps = tuple(betas), eps
        self.fused = fused
        self.val_metrics = task.metrics("val").clone(prefix="val/")
        self.test_metrics = task.metrics("test").clone(prefix="test/")
        # Figures of the final evaluation (a confusion matrix), fed only when asked for.
        self.figures = MetricCollection(task.figures(), compute_groups=False)
        self.draw_figures = False

    def prepare(self, batch: Batch, stage: str | None = None) -> Batch:
        """The batch the encoder sees: a task may change it first (masked LM masks tokens)."""
        stage = stage or ("train" if self.training else "val")
        return self.task.prepare_batch(batch, stage)

    def forward(self, batch: Batch, stage: str | None = None) -> StepOutput:
        """A collated batch -> the task's outputs (``loss``, ``logits``, ``preds``, ``target``)."""
        return self.run_prepared(self.prepare(batch, stage))

    def run_prepared(self, batch: Batch) -> StepOutput:
        """``forward`` on a batch that ``prepare`` returned."""
        # A task that reads few positions (masked LM) names them: the encoder then returns those
        # (M, H) rows only and skips the rest of its last layer's work.
        hidden = self.encoder(
            batch["input_ids"],
            batch["attention_mask"],
            batch.get("token_type_ids"),
            batch.get("segment_ids"),
            batch.get("position_ids"),
            output_mask=self.task.output_positions(batch),
        )  # (B, T, H), or (M, H)
        return self.task.step(self.head, hidden, batch)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self(batch)
        here = not torch.isfinite(out.loss)
        # Every process stops together: one that went on would wait forever for the others in
        # the next gradient all-reduce. Stop before the optimizer step spreads it into the
        # weights; checkpoints already written stay as they are.
        if self.trainer.strategy.reduce_boolean_decision(here, all=False):
            where = "" if here else " on another process"
            raise FloatingPointError(
                f"training loss is {out.loss.item() if here else 'not finite'}{where} at step "
                f"{self.global_step} (epoch "
                f"{self.current_epoch}, batch {batch_idx}); lower optim.lr, or try "
                "trainer.precision=32-true; the last good checkpoint is in the run directory"
            )
        bs = batch["input_ids"].size(0)
        self.log("train/loss", out.loss, prog_bar=True, batch_size=bs)
        scheduler = self.lr_schedulers()
        if scheduler is not None:  # the encoder's learning rate (the head's may be scaled)
            self.log("train/lr", scheduler.get_last_lr()[0], batch_size=bs)
        return out.loss

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # What the task learned from the training data (its label set): ``predict`` and
        # ``evaluate`` restore it from the checkpoint instead of reading that data again.
        checkpoint["task_state"] = self.task.state_dict()
        # The encoder's architecture as trained (a RoBERTa-layout position table included):
        # a finished run is rebuilt from it, not from its export, which may be in another layout.
        checkpoint["encoder_config"] = dataclasses.asdict(self.encoder.cfg)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "task_state" in checkpoint:
            self.task.load_state_dict(checkpoint["task_state"])

    def on_train_batch_start(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        datamodule = self.trainer.datamodule
        if hasattr(datamodule, "batch_trained"):  # its position in the epoch, for checkpoints
            datamodule.batch_trained()

    def _eval_step(self, batch: Batch, stage: str) -> None:
        batch = self.prepare(batch, stage)
        out = self.run_prepared(batch)
        self.task.update_metrics(
            self.val_metrics if stage == "val" else self.test_metrics, out, batch
        )
        if self.draw_figures and self.figures:
            self.task.update_metrics(self.figures, out, batch)
        bs = batch["input_ids"].size(0)
        self.log(f"{stage}/loss", out.loss, sync_dist=True, batch_size=bs)

    def _log_metrics(self, stage: str) -> None:
        # compute() gathers the metric states of every process (torchmetrics), so the values are
        # already global: no second reduction. Metrics may return dicts (flattened by the
        # collection), e.g. per-type F1.
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        self.log_dict(metrics.compute(), prog_bar=stage == "val")
        metrics.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def write_figures(self, out_dir: Path) -> list[Path]:
        """Draw the figures fed since ``draw_figures`` was set (every process computes: the
        states sync), write them on process 0 as ``NAME.png``, and stop feeding them."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        written = []
        for name, metric in self.figures.items(keep_base=True):
            with warnings.catch_warnings():  # matplotlib converting torchmetrics' tensors
                warnings.filterwarnings("ignore", message=r"__array__ implementation")
                fig, _ = metric.plot()
            if self.trainer.is_global_zero:
                fig.savefig(out_dir / f"{name}.png", dpi=100, bbox_inches="tight")
                written.append(out_dir / f"{name}.png")
            plt.close(fig)
        self.figures.reset()
        self.draw_figures = False
        return written

    def predict_step(self, batch: Batch, batch_idx: int) -> Prediction:
        """The batch's predictions (the task's ``prediction``): ``decode_predictions`` decodes a
        whole run's."""
        prepared = self.prepare(batch, "predict")
        out = self.run_prepared(prepared)
        return {k: v.detach().cpu() for k, v in self.task.prediction(out, prepared).items()}

    def decode_predictions(self, outputs: list[Prediction]) -> dict[int, dict]:
        """``trainer.predict``'s per-batch outputs -> row id: record. Decoded all at once, so an
        example whose features span batches (the windows of a long sentence) is whole."""
        if not outputs:
            return {}
        return self.task.decode(concat_batches(outputs))

    def _stepping_batches(self) -> float:
        """``trainer.estimated_stepping_batches``, computed without the training loader.

        Lightning builds the loader, and starts iterating it, to estimate this, which happens here
        before a checkpoint's position inside the epoch is restored: the resumed run would start
        its epoch over. The data module knows its number of batches without a loader.
        """
        t = self.trainer
        batches_of = getattr(t.datamodule, "num_train_batches", None)
        if batches_of is None:
            return t.estimated_stepping_batches
        if t.max_epochs == -1:
            return float("inf") if t.max_steps == -1 else t.max_steps
        batches = batches_of(t.world_size)
        limit = t.limit_train_batches
        batches = min(batches, limit) if isinstance(limit, int) else int(batches * limit)
        steps = math.ceil(batches / t.accumulate_grad_batches) * max(t.max_epochs, 1)
        return min(steps, t.max_steps) if t.max_steps != -1 else steps

    def _loss_scaler(self) -> bool:
        """Whether a GradScaler scales the loss (16-mixed on CUDA; not bf16-mixed)."""
        plugin = self._trainer.precision_plugin if self._trainer is not None else None
        return isinstance(plugin, MixedPrecision) and plugin.scaler is not None

    def _fused(self) -> bool | None:
        """optim.fused, except where it cannot clip: a fused AdamW unscales fp16's scaled
        gradients inside its step, after clipping would have run on them."""
        clips = self._trainer is not None and bool(self._trainer.gradient_clip_val)
        if not (clips and self._loss_scaler()):
            return self.fused
        if self.fused:
            raise UserError(
                "optim.fused=true cannot clip gradients under trainer.precision=16-mixed (the "
                "loss scaler unscales inside the fused step): use optim.fused=null, "
                "trainer.precision=bf16-mixed or trainer.gradient_clip_val=0"
            )
        return False

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        # Lightning refuses to clip for an optimizer that unscales in its step (fused AdamW) under
        # any mixed precision (Lightning-AI/pytorch-lightning#21435), which broke every
        # trainer.precision=bf16-mixed run with the default gradient clipping. Only fp16 scales
        # the loss; under bf16-mixed the gradients are true ones, so clip them as in fp32.
        plugin = self.trainer.precision_plugin
        if isinstance(plugin, MixedPrecision) and plugin.scaler is None and gradient_clip_val:
            algorithm = GradClipAlgorithmType(gradient_clip_algorithm or "norm")
            Precision.clip_gradients(plugin, optimizer, gradient_clip_val, algorithm)
            return
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self) -> dict:
        # Biases and LayerNorm weights (the 1-d parameters) get no weight decay, as in BERT.
        # The freshly initialised head may learn faster than the pretrained encoder (head_lr_scale).
        groups = []
        for module, lr in ((self.encoder, self.lr), (self.head, self.lr * self.head_lr_scale)):
            params = [p for p in module.parameters() if p.requires_grad]
            decay = [p for p in params if p.ndim > 1]
            no_decay = [p for p in params if p.ndim <= 1]
            groups += [
                {"params": decay, "weight_decay": self.weight_decay, "lr": lr},
                {"params": no_decay, "weight_decay": 0.0, "lr": lr},
            ]
        opt = adamw(
            [g for g in groups if g["params"]], self.lr, self.betas, self.eps, self._fused()
        )
        total = self._stepping_batches()
        if math.isfinite(total):
            warmup = int(self.warmup_ratio * total)
            sched = get_linear_schedule_with_warmup(opt, warmup, int(total))
        else:  # time-limited run with no step or epoch limit: warm up, then hold
            sched = get_constant_schedule_with_warmup(opt, 100)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def assemble(
    encoder: Encoder,
    task: Task,
    pretrained: dict[str, torch.Tensor] | None = None,
    **optim: Any,
) -> TaskModule:
    """The one place encoder, task head and module are put together: the task learns the
    head style of the encoder's family, builds its head (``pretrained``: the checkpoint's other
    tensors, a pooler or masked-LM head to start from) and both go into a ``TaskModule``."""
    family, cfg = get_family(encoder.cfg.family), encoder.cfg
    if family.head_style is not None:
        task.head_style = family.head_style(cfg)
    else:  # BERT's, with the encoder's activation and norm eps (as BertPredictionHeadTransform)
        task.head_style = HeadStyle(act=cfg.hidden_act, norm_eps=cfg.layer_norm_eps)
    head = task.build_head(encoder.cfg.hidden_size, pretrained or {})
    return TaskModule(encoder, task, head, **optim)


def concat_batches(values: list[Any]) -> Any:
    """Per-batch predictions joined into one: tensors concatenated along their first dimension,
    dicts (a task's ``preds`` may be a dict of tensors) key by key, at any depth."""
    first = values[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(values)
    if isinstance(first, dict):
        return {k: concat_batches([v[k] for v in values]) for k in first}
    raise UserError(
        f"Task.prediction returned a {type(first).__name__}: it must hold tensors, or dicts of "
        "tensors, whose first dimension is the batch's (docs/tasks.md, the hooks)"
    )
