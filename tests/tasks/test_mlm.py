"""Masked-LM task: masking statistics, packing, attention isolation, export to fill-mask."""

from __future__ import annotations

import pytest
import torch
import transformers

from framework.encoder import Encoder
from framework.export import export_hf
from framework.module import TaskModule
from framework.presets import preset
from tasks.mlm import MaskedLM


def _task(tokenizer, **kw) -> MaskedLM:
    task = MaskedLM(**kw)
    task.use_tokenizer(tokenizer)
    return task


def _rows(task, tokenizer, texts, max_length=64):
    cols = task.encode({"text": texts}, list(range(len(texts))), tokenizer, max_length)
    return [dict(zip(cols, v, strict=True)) for v in zip(*cols.values(), strict=True)]


TEXTS = [
    "The quick brown fox jumps over the lazy dog near the riverbank.",
    "Unbelievably, tokenization splits uncharacteristically long words into pieces.",
    "A short one.",
    "Pretraining encoders on domain text helps downstream classification accuracy.",
] * 40


def test_masking_rate_and_80_10_10_split(tokenizer):
    task = _task(tokenizer)
    batch = task.collate(_rows(task, tokenizer, TEXTS), tokenizer.pad_token_id)
    torch.manual_seed(0)
    counts = torch.zeros(3)
    chosen_total, maskable_total = 0, 0
    special = torch.tensor([tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id])
    for _ in range(30):
        out = task.prepare_batch(dict(batch), "train")
        chosen = out["labels"] != -100
        orig, new = batch["input_ids"], out["input_ids"]
        maskable = batch["attention_mask"].bool() & ~torch.isin(orig, special)
        assert not (chosen & ~maskable).any()  # special tokens and padding never chosen
        assert torch.equal(out["labels"][chosen], orig[chosen])
        chosen_total += chosen.sum().item()
        maskable_total += maskable.sum().item()
        counts[0] += (new[chosen] == tokenizer.mask_token_id).sum()
        counts[2] += (new[chosen] == orig[chosen]).sum()
        counts[1] += (
            (new[chosen] != tokenizer.mask_token_id) & (new[chosen] != orig[chosen])
        ).sum()
        assert torch.equal(new[~chosen], orig[~chosen])  # nothing else changes
    assert abs(chosen_total / maskable_total - 0.15) < 0.01
    share = counts / counts.sum()
    # [MASK] 80%, random 10% (a random id may equal the original: ~0), unchanged 10%
    assert abs(share[0] - 0.8) < 0.02 and abs(share[1] - 0.1) < 0.02 and abs(share[2] - 0.1) < 0.02


def test_whole_word_masking_takes_every_piece_of_a_word(tokenizer):
    task = _task(tokenizer, whole_word=True)
    batch = task.collate(_rows(task, tokenizer, TEXTS), tokenizer.pad_token_id)
    torch.manual_seed(1)
    out = task.prepare_batch(dict(batch), "train")
    chosen = out["labels"] != -100
    starts = batch["word_starts"].bool()
    ids = batch["input_ids"]
    pieces = 0
    for b in range(ids.size(0)):
        for t in range(1, ids.size(1)):
            if not starts[b, t] and batch["attention_mask"][b, t]:  # a "##" continuation
                assert chosen[b, t] == chosen[b, t - 1]  # same fate as the piece before
                pieces += 1
    assert pieces > 50 and chosen.any()
    # the continuation pieces are the "##" tokens of WordPiece
    cont = ids[~starts & batch["attention_mask"].bool()]
    assert all(tokenizer.convert_ids_to_tokens(int(i)).startswith("##") for i in cont)


def test_eval_masks_are_fixed_and_training_masks_change(tokenizer):
    task = _task(tokenizer)
    batch = task.collate(_rows(task, tokenizer, TEXTS[:8]), tokenizer.pad_token_id)
    a = task.prepare_batch(dict(batch), "val")["labels"]
    b = task.prepare_batch(dict(batch), "val")["labels"]
    assert torch.equal(a, b)
    c = task.prepare_batch(dict(batch), "train")["labels"]
    d = task.prepare_batch(dict(batch), "train")["labels"]
    assert not torch.equal(c, d)


def test_packing_fills_rows_and_keeps_documents_apart(tokenizer):
    task = _task(tokenizer)
    rows = _rows(task, tokenizer, TEXTS, max_length=64)
    lengths = [len(r["input_ids"]) for r in rows]
    assert max(lengths) == 64 and all(n == 64 for n in lengths[:-1])  # only the last row is short
    n_tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in TEXTS)
    pieces = sum(len(r["piece_lengths"]) for r in rows)
    assert sum(lengths) == n_tokens + 2 * pieces  # every token kept, one [CLS] and [SEP] per piece
    for r in rows:
        batch = task.collate([r], tokenizer.pad_token_id)  # segment/position ids built here
        seg, pos, ids = batch["segment_ids"][0], batch["position_ids"][0], r["input_ids"]
        assert sum(r["piece_lengths"]) == len(ids) and len(set(seg.tolist())) == len(
            r["piece_lengths"]
        )
        for t in range(len(ids)):
            first = t == 0 or seg[t] != seg[t - 1]
            assert (pos[t] == 0) == first and (ids[t] == tokenizer.cls_token_id) == first


def test_packed_documents_do_not_attend_to_each_other(tokenizer):
    task = _task(tokenizer)
    rows = _rows(task, tokenizer, TEXTS[:4], max_length=128)
    assert len(rows) == 1 and len(rows[0]["piece_lengths"]) == 4
    batch = task.collate(rows, tokenizer.pad_token_id)
    torch.manual_seed(0)
    enc = Encoder(preset("tiny", hidden_dropout=0.0)).eval()
    seg = batch["segment_ids"][0]
    with torch.no_grad():
        packed = enc(batch["input_ids"], batch["attention_mask"], None, batch["segment_ids"],
                     batch["position_ids"])[0]  # fmt: skip
        for s in range(4):  # each document alone gives the same vectors
            ids = batch["input_ids"][0][seg == s][None]
            alone = enc(ids)[0]
            assert (packed[seg == s] - alone).abs().max().item() < 1e-5
        # changing another document changes nothing in this one
        other = batch["input_ids"].clone()
        other[0][seg == 1] = tokenizer.mask_token_id
        changed = enc(other, batch["attention_mask"], None, batch["segment_ids"],
                      batch["position_ids"])[0]  # fmt: skip
    assert torch.equal(changed[seg == 0], packed[seg == 0])


@pytest.mark.parametrize("tied", [True, False])
def test_export_is_a_fill_mask_model_with_the_same_logits(tokenizer, tmp_path, tied):
    task = _task(tokenizer, tie_embeddings=tied)
    torch.manual_seed(0)
    encoder = Encoder(preset("tiny", vocab_size=len(tokenizer)))
    module = TaskModule(encoder, task, task.build_head(encoder.cfg.hidden_size, {})).eval()
    words = encoder.embeddings.word_embeddings.weight
    assert (module.head.decoder_weight is words) == tied  # untied: a matrix of its own
    out_dir = export_hf(module, tokenizer, tmp_path / "export")
    hf = transformers.BertForMaskedLM.from_pretrained(out_dir, attn_implementation="eager").eval()
    decoder = hf.get_output_embeddings().weight
    assert (decoder.data_ptr() == hf.get_input_embeddings().weight.data_ptr()) == tied
    assert torch.equal(decoder, module.head.decoder_weight.detach())
    # One document per row (HF has no packed attention): compare on single documents.
    single = task.collate([_rows(task, tokenizer, [t], max_length=64)[0] for t in TEXTS[:3]], 0)
    assert single["segment_ids"].max() == 0
    prepared = module.prepare(single)
    with torch.no_grad():
        ours = module(single).logits
        theirs = hf(prepared["input_ids"], prepared["attention_mask"])
    assert (ours - task.hf_outputs(theirs, prepared)).abs().max().item() <= 1e-4
    fill = transformers.pipeline("fill-mask", model=str(out_dir), tokenizer=str(out_dir))
    preds = fill("the cat sat on the [MASK].", top_k=3)
    assert len(preds) == 3 and all("token_str" in p for p in preds)


@pytest.mark.parametrize("tied", [True, False])
def test_continued_pretraining_keeps_a_checkpoints_mlm_head(tokenizer, tmp_path, tied):
    task = _task(tokenizer, tie_embeddings=tied)
    torch.manual_seed(0)
    encoder = Encoder(preset("tiny", vocab_size=len(tokenizer)))
    module = TaskModule(encoder, task, task.build_head(encoder.cfg.hidden_size, {}))
    with torch.no_grad():
        module.head.bias.fill_(0.5)
    out_dir = export_hf(module, tokenizer, tmp_path / "export")
    from framework.pretrained import load_pretrained

    _, extra = load_pretrained(str(out_dir))
    head = task.build_head(encoder.cfg.hidden_size, extra)
    assert torch.equal(head.bias, module.head.bias)
    assert torch.equal(head.dense.weight, module.head.dense.weight)
    if not tied:  # the untied decoder comes back too
        assert torch.equal(head.decoder, module.head.decoder)
    # a checkpoint without an MLM head (BertModel) gets a new one
    assert task.build_head(encoder.cfg.hidden_size, {}).bias.abs().sum() == 0


def test_metrics_include_the_unigram_baseline_accuracy(tokenizer):
    task = _task(tokenizer)
    metrics = task.metrics("val")
    target = torch.tensor([7, 7, 7, 9, 11, 7, 9, 12])  # most frequent: 7, 4 of 8
    logits = torch.full((8, task.vocab_size), -5.0)
    logits[torch.arange(8), torch.tensor([7, 9, 7, 9, 11, 1, 1, 1])] = 5.0  # 4 of 8 right
    metrics.update(logits, target)
    out = {k: v.item() for k, v in metrics.compute().items()}
    assert out["acc"] == 0.5 and out["acc_most_frequent"] == 0.5
    metrics.update(logits[:3], torch.tensor([9, 9, 9]))  # now 7: 4, 9: 5 of 11
    assert metrics.compute()["acc_most_frequent"].item() == pytest.approx(5 / 11)


def test_output_spread_flags_a_collapsed_encoder(tokenizer):
    from framework.encoder import Encoder
    from framework.presets import preset

    task = _task(tokenizer)
    torch.manual_seed(0)
    encoder = Encoder(preset("tiny", vocab_size=len(tokenizer))).eval()
    ids = torch.randint(1000, 5000, (8, 32))
    with torch.no_grad():
        hidden = encoder(ids, torch.ones_like(ids)).flatten(0, 1)  # (256, 64) random init
    logits = torch.zeros(len(hidden), task.vocab_size)
    target = torch.zeros(len(hidden), dtype=torch.long)
    healthy = task.metrics("val")
    healthy.update(logits, target, hidden=hidden)
    assert healthy.compute()["output_spread"].item() > 0.5
    collapsed = task.metrics("val")  # every token mapped to the same vector
    collapsed.update(logits, target, hidden=hidden[:1].expand_as(hidden) + 1e-4 * hidden)
    with pytest.warns(UserWarning, match="outputs have collapsed"):
        assert collapsed.compute()["output_spread"].item() < 0.01
