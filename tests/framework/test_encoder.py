"""Encoder: parity with transformers' BertModel, back-end parity, padding, pinned output."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertModel

from framework.attention import length_buckets
from framework.convert import config_from_hf, config_to_hf, hf_to_tasklight, tasklight_to_hf
from framework.encoder import Encoder
from framework.errors import UserError
from framework.presets import preset
from framework.pretrained import load_pretrained

SENTENCES = [
    "a charming and often affecting journey .",
    "bleak",
    "it is not a bad film at all , really",
]


def _batch(tokenizer):
    enc = tokenizer(
        SENTENCES, ["x"] * 2 + ["and a second segment"], padding=True, return_tensors="pt"
    )
    return enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]


def test_minilm_matches_transformers_bertmodel(minilm_dir, tokenizer):
    ours, rest = load_pretrained(minilm_dir)
    ours.eval()
    theirs = BertModel.from_pretrained(minilm_dir, attn_implementation="eager").eval()
    ids, mask, types = _batch(tokenizer)
    with torch.no_grad():
        a = ours(ids, mask, types)
        b = theirs(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
    real = mask.bool()
    assert a.shape == b.shape == (3, ids.size(1), 384)
    assert (a[real] - b[real]).abs().max().item() <= 1e-5
    assert set(rest) == {"pooler.dense.weight", "pooler.dense.bias"}


@pytest.mark.parametrize("act", ["gelu", "gelu_new", "relu"])
def test_random_bert_parity_and_roundtrip(act, tokenizer):
    torch.manual_seed(0)
    hf_cfg = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        hidden_act=act,
        attn_implementation="eager",
    )
    theirs = BertModel(hf_cfg, add_pooling_layer=False).eval()
    cfg = config_from_hf(hf_cfg.to_dict())
    ours = Encoder(cfg).eval()
    state, rest = hf_to_tasklight(theirs.state_dict(), cfg)
    ours.load_state_dict(state)
    assert rest == {}
    ids, mask, types = _batch(tokenizer)
    with torch.no_grad():
        diff = ours(ids, mask, types) - theirs(ids, mask, token_type_ids=types).last_hidden_state
    assert diff[mask.bool()].abs().max().item() <= 1e-5
    back = tasklight_to_hf(ours.state_dict(), cfg)
    for k, v in theirs.state_dict().items():
        if k != "embeddings.position_ids":
            assert torch.equal(back[k], v), k
    assert config_from_hf(config_to_hf(cfg)) == cfg


def test_sdpa_matches_math_reference(tiny_encoder, tokenizer):
    ids, mask, types = _batch(tokenizer)
    with torch.no_grad():
        fast = tiny_encoder(ids, mask, types)
        tiny_encoder.attn_impl = "math"
        ref = tiny_encoder(ids, mask, types)
    assert (fast - ref)[mask.bool()].abs().max().item() <= 1e-5


def test_padding_does_not_change_real_tokens(tiny_encoder, tokenizer):
    ids = tokenizer(["a short one"], return_tensors="pt")["input_ids"]  # (1, T)
    padded = torch.cat([ids, torch.zeros(1, 7, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones_like(ids), torch.zeros(1, 7, dtype=torch.long)], dim=1)
    with torch.no_grad():
        a = tiny_encoder(ids)
        b = tiny_encoder(padded, mask)[:, : ids.size(1)]
    assert (a - b).abs().max().item() <= 1e-5


def test_pinned_output_of_fixed_init_tiny_model(tiny_encoder):
    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102]])
    with torch.no_grad():
        out = tiny_encoder(ids)
    assert out.shape == (1, 6, 64)
    # Pinned: changes only if the architecture or the initialisation changes.
    assert out[0, 0, :4].tolist() == pytest.approx(PINNED, abs=1e-4)
    assert out.abs().sum().item() == pytest.approx(PINNED_ABS_SUM, rel=1e-4)


PINNED = [-0.77556, -1.18925, -1.89107, -0.3309]
PINNED_ABS_SUM = 302.2189


def test_presets_and_bad_config():
    assert preset("small").hidden_size == 384 and preset("base").num_layers == 12
    with pytest.raises(ValueError, match="divisible"):
        preset("tiny", num_heads=5)
    with pytest.raises(ValueError, match="unknown encoder preset"):
        preset("huge")


def test_model_dir_without_weights_is_a_clear_error(tmp_path, minilm_dir):
    (tmp_path / "config.json").write_text(open(f"{minilm_dir}/config.json").read())
    with pytest.raises(UserError, match="no weights"):
        load_pretrained(str(tmp_path))
    with pytest.raises(UserError, match="not a directory"):
        load_pretrained(str(tmp_path / "missing"))
    with pytest.raises(UserError, match=r"cannot fetch config\.json"):  # offline hub id
        load_pretrained("no-such-org/no-such-model")


@pytest.mark.parametrize("unpad", [False, True])
@pytest.mark.parametrize("impl", ["sdpa", "math"])
def test_output_mask_gives_the_selected_rows_of_the_full_output(tiny_encoder, impl, unpad):
    # Padded rows and packed rows (two documents in row 0), and a row with no selected token.
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 2000, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    segments = torch.tensor([[0] * 5 + [1] * 7, [0] * 9 + [-1] * 3, [0] * 12])
    positions = torch.tensor([list(range(5)) + list(range(7)), list(range(12)), list(range(12))])
    selected = torch.zeros_like(ids, dtype=torch.bool)
    selected[0, [1, 4, 5, 11]] = True
    selected[1, [0, 8]] = True
    tiny_encoder.attn_impl = impl
    tiny_encoder.train()  # gradients too; dropout is 0 in this fixture
    args = (ids, mask, None, segments, positions)
    full = tiny_encoder(*args)  # the padded reference
    tiny_encoder.unpad = unpad  # the batch has padding: unpad=True takes the unpadded path
    grads_full = torch.autograd.grad(full[selected].square().sum(), tiny_encoder.parameters())
    part = tiny_encoder(*args, output_mask=selected)
    grads_part = torch.autograd.grad(part.square().sum(), tiny_encoder.parameters())
    assert part.shape == (6, 64)
    assert (part - full[selected]).abs().max().item() <= 1e-5
    for a, b in zip(grads_part, grads_full, strict=True):
        assert (a - b).abs().max().item() <= 1e-5
    none = tiny_encoder(*args, output_mask=torch.zeros_like(selected))
    assert none.shape == (0, 64)


def test_unpadded_output_mask_reads_the_cls_rows_of_a_padded_batch(tiny_encoder, tokenizer):
    # What classification asks for: position 0 of every row, rows of different lengths.
    ids, mask, types = _batch(tokenizer)
    assert not mask.all()
    full = tiny_encoder(ids, mask, types)[:, 0]  # (B, H), padded path
    cls = torch.zeros_like(mask, dtype=torch.bool)
    cls[:, 0] = True
    tiny_encoder.unpad = True
    part = tiny_encoder(ids, mask, types, output_mask=cls)
    assert part.shape == full.shape
    assert (part - full).abs().max().item() <= 1e-5


@pytest.mark.parametrize("impl", ["sdpa", "math"])
def test_unpadded_path_matches_padded_path(tiny_encoder, tokenizer, impl):
    ids, mask, types = _batch(tokenizer)
    assert not mask.all()  # the batch has padding
    tiny_encoder.attn_impl = impl
    tiny_encoder.train()  # gradients too; dropout is 0 in this fixture
    real = mask.bool()
    outs, grads = [], []
    for unpad in (False, True):
        tiny_encoder.unpad = unpad
        out = tiny_encoder(ids, mask, types)
        outs.append(out)
        grads.append(torch.autograd.grad(out[real].square().sum(), tiny_encoder.parameters()))
    assert (outs[1][real] - outs[0][real]).abs().max().item() <= 1e-5
    assert outs[1][~real].abs().max().item() == 0.0  # padding rows are zeros
    for a, b in zip(*grads, strict=True):  # sums over many tokens: relative to their size
        assert (a - b).abs().max().item() <= 1e-6 * max(1.0, b.abs().max().item())


@pytest.mark.parametrize("impl", ["sdpa", "math"])
def test_length_buckets_match_the_padded_path(tiny_encoder, impl):
    # Rows of very different lengths in random order (an unsorted training batch): the CPU
    # unpadded path runs attention in length buckets; same outputs and gradients as padded.
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(2, 40, (20,), generator=g)
    lengths[3] = 60
    ids = torch.randint(1000, 2000, (20, 60), generator=g)
    mask = (torch.arange(60)[None] < lengths[:, None]).long()
    assert len(length_buckets(lengths.tolist())) > 1  # this batch is bucketed
    tiny_encoder.attn_impl = impl
    tiny_encoder.train()  # gradients too; dropout is 0 in this fixture
    real = mask.bool()
    cls = torch.zeros_like(real)
    cls[:, 0] = True
    # A random projection of the outputs: gradients of the same size in every layer (a sum of
    # squares of LayerNorm outputs is nearly constant, its lower-layer gradients rounding noise).
    proj = torch.randn(int(real.sum()), 64, generator=g)
    outs, grads = [], []
    for unpad in (False, True):
        tiny_encoder.unpad = unpad
        out = tiny_encoder(ids, mask)
        outs.append(out)
        loss = (out[real] * proj).sum() + tiny_encoder(ids, mask, output_mask=cls).sum()
        grads.append(torch.autograd.grad(loss, tiny_encoder.parameters()))
    assert (outs[1][real] - outs[0][real]).abs().max().item() <= 1e-5
    for a, b in zip(*grads, strict=True):
        assert (a - b).abs().max().item() <= 1e-5 * max(1.0, b.abs().max().item())


@pytest.mark.parametrize("unpad", [False, True])
def test_bf16_autocast_runs_every_path(tiny_encoder, unpad):
    # trainer.precision=bf16-mixed on a CPU: projections come out in bf16 while the residual
    # stream is fp32; every path (padded, unpadded, length buckets, selected outputs) must mix
    # them (a selected-output path once wrote bf16 into an fp32 buffer and failed).
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(2, 40, (20,), generator=g)
    ids = torch.randint(1000, 2000, (20, 40), generator=g)
    mask = (torch.arange(40)[None] < lengths[:, None]).long()
    real = mask.bool()
    cls = torch.zeros_like(real)
    cls[:, 0] = True
    tiny_encoder.unpad = unpad
    reference = tiny_encoder(ids, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        full = tiny_encoder(ids, mask)
        part = tiny_encoder(ids, mask, output_mask=cls)
    assert (full.float()[real] - reference[real]).abs().max().item() < 0.1
    assert (part.float() - reference[:, 0]).abs().max().item() < 0.1
