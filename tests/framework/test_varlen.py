"""The varlen (FlashAttention) back-end of the unpadded path.

On CPU: the plumbing (row offsets, selected queries per row) runs with a reference kernel in place
of FlashAttention and must match the padded path. On CUDA (``gpu`` marker): the real kernel, bf16,
against the padded fp32 path.
"""

from __future__ import annotations

import pytest
import torch

import framework.attention as enc
from framework.encoder import Encoder
from framework.presets import preset
from tests.conftest import reference_varlen


def _batch(device="cpu"):
    g = torch.Generator().manual_seed(0)
    lengths = [12, 5, 9, 1]
    ids = torch.randint(1000, 2000, (4, 12), generator=g)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    return ids.to(device), mask.to(device)


def test_varlen_plumbing_matches_the_padded_path_on_cpu(monkeypatch):
    torch.manual_seed(0)
    model = Encoder(preset("tiny", hidden_dropout=0.0)).train()
    ids, mask = _batch()
    selected = torch.zeros_like(mask, dtype=torch.bool)
    selected[:, 0] = True
    selected[0, [3, 11]] = True
    selected[2, 8] = True
    full = model(ids, mask)  # padded reference
    part_ref = model(ids, mask, output_mask=selected)
    monkeypatch.setattr(enc, "VARLEN", reference_varlen)
    monkeypatch.setattr(Encoder, "_use_varlen", lambda self, device, keep: True)
    model.unpad = True
    out = model(ids, mask)
    real = mask.bool()
    assert (out[real] - full[real]).abs().max().item() <= 1e-5
    part = model(ids, mask, output_mask=selected)
    assert part.shape == (7, 64)
    assert (part - part_ref).abs().max().item() <= 1e-5
    grads = torch.autograd.grad(part.square().sum(), model.parameters())
    ref = torch.autograd.grad(part_ref.square().sum(), model.parameters(), allow_unused=True)
    for a, b in zip(grads, ref, strict=True):
        if b is not None:
            assert (a - b).abs().max().item() <= 1e-5 * max(1.0, b.abs().max().item())


def test_varlen_is_not_used_on_cpu():
    model = Encoder(preset("tiny"), unpad=True)
    ids, mask = _batch()
    keep = mask.bool()[:, None, None, :]
    assert not model._use_varlen(ids.device, keep)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@cuda
def test_varlen_kernel_is_chosen_under_bf16_autocast():
    assert enc.VARLEN is not None, "no varlen kernel: torch >= 2.10 or flash-attn needed"
    model = Encoder(preset("tiny", hidden_dropout=0.0), unpad=True).cuda().train()
    ids, mask = _batch("cuda")
    keep = mask.bool()[:, None, None, :]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert model._use_varlen(ids.device, keep)
    with pytest.warns(UserWarning, match="fp32"):
        assert not model._use_varlen(ids.device, keep)  # fp32: falls back, says why


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("select", [False, True])
@pytest.mark.parametrize("name", ["small", "modern_tiny"])  # modern_tiny: a 4-token window
def test_varlen_bf16_matches_padded_fp32(select, name):
    """The kernel (its ``window_size`` on ModernBERT's windowed layers, rows of 12 and 9
    tokens) in bf16 against the padded fp32 path."""
    torch.manual_seed(0)
    model = Encoder(preset(name, hidden_dropout=0.0)).cuda().train()
    ids, mask = _batch("cuda")
    selected = torch.zeros_like(mask, dtype=torch.bool)
    selected[:, 0] = True
    selected[0, 7] = True
    om = selected if select else None
    ref = model(ids, mask, output_mask=om)  # padded, fp32
    ref = ref if select else ref[mask.bool()]
    model.unpad = True
    calls = []
    real_kernel = enc.VARLEN

    def counting(*args, **kwargs):
        calls.append(kwargs.get("window_size"))
        return real_kernel(*args, **kwargs)

    enc.VARLEN = counting
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(ids, mask, output_mask=om)
    finally:
        enc.VARLEN = real_kernel
    out = out if select else out[mask.bool()]
    assert calls, "the varlen kernel did not run"
    if name == "modern_tiny":
        assert (4, 4) in calls  # the windowed layers ran in the kernel
    err = (out.float() - ref).abs().max().item()
    assert err <= 5e-2 * max(1.0, ref.abs().max().item()), err
    out.float().square().sum().backward()  # gradients flow through the kernel
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
