"""The generic module's optimizer choice and the training-time callback."""

from __future__ import annotations

import time

import pytest
import torch

from framework.encoder import Encoder
from framework.errors import UserError
from framework.module import adamw
from framework.presets import preset
from framework.timing import TrainTimer, gemm_flops_per_token


def _groups():
    return [{"params": [torch.nn.Parameter(torch.randn(4, 4))], "lr": 1e-3}]


def test_adamw_is_fused_where_supported_and_foreach_on_request():
    assert adamw(_groups(), 1e-3, (0.9, 0.999), 1e-8, None).defaults["fused"] is True  # CPU
    assert not adamw(_groups(), 1e-3, (0.9, 0.999), 1e-8, False).defaults["fused"]


def test_adamw_fused_required_on_an_unsupported_dtype_is_a_user_error():
    complex_ = [{"params": [torch.nn.Parameter(torch.zeros(2, dtype=torch.complex64))]}]
    with pytest.raises(UserError, match=r"optim\.fused=true"):
        adamw(complex_, 1e-3, (0.9, 0.999), 1e-8, True)
    assert not adamw(complex_, 1e-3, (0.9, 0.999), 1e-8, None).defaults["fused"]  # falls back


def test_train_timer_counts_batches_only():
    timer = TrainTimer()
    for _ in range(2):
        timer.on_train_batch_start(None, None, None, 0)
        time.sleep(0.02)
        timer.on_train_batch_end(None, None, None, None, 0)
        time.sleep(0.05)  # between batches (loading, validation, checkpoints): not counted
    assert timer.batches == 2
    assert 0.04 <= timer.seconds < 0.09


def test_gemm_flops_per_token_is_six_times_the_layer_weights():
    cfg = preset("base")  # 12 layers, 768 hidden, 3072 intermediate: 85M weights in the layers
    layers = Encoder(cfg).layers.named_parameters()
    weights = sum(p.numel() for _, p in layers if p.ndim == 2)  # biases and norms: not GEMMs
    assert gemm_flops_per_token(cfg) == 6 * weights == 509_607_936


def test_predictions_that_are_dicts_of_tensors_are_joined_over_batches():
    """A plug-in's ``preds`` may be a dict (a pairwise task's two scores): the default
    ``prediction`` keeps it and ``decode`` gets it whole (it was an AttributeError)."""
    from types import SimpleNamespace

    from framework.module import TaskModule

    batches = [
        {"row": torch.tensor([0, 1]), "preds": {"a": torch.tensor([0.1, 0.2]),
                                                 "b": {"c": torch.ones(2, 3)}}},
        {"row": torch.tensor([2]), "preds": {"a": torch.tensor([0.3]),
                                              "b": {"c": torch.zeros(1, 3)}}},
    ]  # fmt: skip
    seen = {}
    task = SimpleNamespace(decode=lambda preds: seen.setdefault("preds", preds))
    merged = TaskModule.decode_predictions(SimpleNamespace(task=task), batches)
    assert merged["row"].tolist() == [0, 1, 2]
    assert merged["preds"]["a"].tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert merged["preds"]["b"]["c"].shape == (3, 3)
    with pytest.raises(UserError, match="must hold tensors, or dicts of tensors"):
        TaskModule.decode_predictions(SimpleNamespace(task=task), [{"row": "x"}])
