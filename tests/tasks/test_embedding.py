"""The embedding task: its losses equal sentence-transformers' own, its export loads in
``SentenceTransformer`` and ``AutoModel`` with the same embeddings, its in-batch negatives are
gathered across processes with gradients, and its retrieval metric counts ranks right."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
import transformers

from framework.export import export_hf
from framework.module import TaskModule
from framework.pretrained import build_encoder
from tasks.embedding import Embedding, Retrieval, cosent_loss, mnrl_loss

st = pytest.importorskip("sentence_transformers")
TEXTS = ["A man is playing a guitar.", "Cats sleep all day", "the stock market fell", "hi"]
PAIRS = ["Someone plays an instrument.", "a sleeping cat", "shares dropped sharply", "hello"]


def test_losses_equal_sentence_transformers_losses():
    from sentence_transformers.sentence_transformer import losses

    g = torch.Generator().manual_seed(0)
    texts, pairs, negs = (torch.randn(6, 16, generator=g) for _ in range(3))
    mnrl = losses.MultipleNegativesRankingLoss(model=None, scale=20.0)
    for neg in (negs[:0], negs):  # without and with a hard negative per text
        columns = [texts, pairs, *([neg] if len(neg) else [])]
        theirs = mnrl.compute_loss_from_embeddings(columns, None)
        assert mnrl_loss(texts, pairs, neg, 20.0).item() == pytest.approx(theirs.item(), rel=1e-5)
    score = torch.tensor([4.8, 1.0, 3.2, 3.2, 0.4, 2.5])
    cos = F.cosine_similarity(texts, pairs, dim=-1)
    cosent = losses.CoSENTLoss(model=None, scale=20.0)
    theirs = cosent.compute_loss_from_embeddings([texts, pairs], score)
    assert cosent_loss(cos, score, 20.0).item() == pytest.approx(theirs.item(), rel=1e-5)


def test_a_copy_of_the_positive_is_no_negative():
    """Two texts share one pair (two questions, one paragraph): each one's loss is the loss
    without the other copy among its candidates."""
    g = torch.Generator().manual_seed(1)
    texts, pairs, negs = (torch.randn(4, 8, generator=g) for _ in range(3))
    pairs[2] = pairs[0]
    keys = torch.tensor([11, 12, 11, 13])
    got = mnrl_loss(texts, pairs, negs, 20.0, keys)
    cands = F.normalize(torch.cat([pairs, negs]), dim=-1)
    sims = F.normalize(texts, dim=-1) @ cands.T * 20
    dropped = {0: 2, 2: 0}  # text 0's candidates lack pair 2, text 2's lack pair 0
    want = (
        sum(
            torch.logsumexp(sims[i, [c for c in range(8) if c != dropped.get(i)]], 0) - sims[i, i]
            for i in range(4)
        )
        / 4
    )
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    assert got.item() < mnrl_loss(texts, pairs, negs, 20.0).item()  # the copy was a negative


def _embed(module: TaskModule, tokenizer, texts: list[str]) -> torch.Tensor:
    """tasklight's embeddings of ``texts`` (a predict batch, through the module)."""
    task = module.task
    cols = task.encode({task.text_column: texts}, list(range(len(texts))), tokenizer, 128)
    features = [dict(zip(cols, v, strict=True)) for v in zip(*cols.values(), strict=True)]
    with torch.no_grad():
        return module(task.collate(features, tokenizer.pad_token_id)).preds


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_export_is_a_sentence_transformers_model_with_the_same_embeddings(
    pooling, minilm_dir, tokenizer, tmp_path
):
    encoder, pretrained = build_encoder(minilm_dir, None)
    task = Embedding(pooling=pooling)
    module = TaskModule(encoder, task, task.build_head(encoder.cfg.hidden_size, pretrained)).eval()
    ours = _embed(module, tokenizer, TEXTS + PAIRS)
    if pooling == "mean":  # all-MiniLM-L6-v2 is a mean-pooling model: loaded as it ships
        shipped = st.SentenceTransformer(minilm_dir, device="cpu").encode(TEXTS + PAIRS)
        assert (ours - torch.as_tensor(shipped)).abs().max().item() <= 1e-5

    out = export_hf(module, tokenizer, tmp_path / "export")
    modules = json.loads((out / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[1] for m in modules] == ["Transformer", "Pooling", "Normalize"]
    model = st.SentenceTransformer(str(out), device="cpu")
    theirs = torch.as_tensor(model.encode(TEXTS + PAIRS))
    assert (ours - theirs).abs().max().item() <= 1e-5
    assert model.similarity_fn_name == "cosine"

    hf = transformers.AutoModel.from_pretrained(out).eval()  # the plain encoder, pooled by hand
    enc = transformers.AutoTokenizer.from_pretrained(out)(TEXTS + PAIRS, padding=True,
                                                          return_tensors="pt")  # fmt: skip
    with torch.no_grad():
        hidden = hf(**enc).last_hidden_state
    assert (task.embed(hidden, enc["attention_mask"]) - ours).abs().max().item() <= 1e-5


def test_retrieval_ranks_each_text_against_the_distinct_pairs():
    # 3 distinct pairs (key 7 twice); text 0 finds its pair first, text 1 second, text 2 third.
    pairs = torch.eye(3)[[0, 1, 2, 1]]
    texts = torch.tensor([[1.0, 0.1, 0], [0.9, 0.5, 0], [0.5, 0.4, 0.2], [0, 1.0, 0]])
    keys = torch.tensor([5, 7, 9, 7])
    metric = Retrieval()
    metric.update(texts[:2], pairs[:2], keys[:2])
    metric.update(texts[2:], pairs[2:], keys[2:])  # in two batches, as in an epoch
    got = {k: v.item() for k, v in metric.compute().items()}
    ranks = torch.tensor([1.0, 2.0, 3.0, 1.0])
    assert got["recall_at_1"] == pytest.approx(0.5)
    assert got["recall_at_10"] == pytest.approx(1.0)
    assert got["mrr_at_10"] == pytest.approx((1 / ranks).mean().item())
    assert got["ndcg_at_10"] == pytest.approx((1 / torch.log2(ranks + 1)).mean().item())


def _rank_mnrl(rank: int, world: int, init: str, out: str, data: dict) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        rows = data["rows"][rank]  # the processes hold different numbers of rows
        parts = [data[k][rows].clone().requires_grad_() for k in ("texts", "pairs", "negs")]
        loss = mnrl_loss(*parts, 20.0, data["keys"][rows])
        loss.backward()
        torch.save({"loss": loss.detach(), "grads": [p.grad for p in parts]}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_mnrl_gathers_the_negatives_of_every_process_with_gradients(tmp_path):
    """2 processes (gloo): each one's loss is the one-process loss of its texts against the
    concatenated batch's candidates; and, summed over processes as DDP's all-reduce does, the
    gradients of each process's rows are those of the one-process loss over the whole batch."""
    g = torch.Generator().manual_seed(0)
    data = {k: torch.randn(7, 8, generator=g) for k in ("texts", "pairs", "negs")}
    data["pairs"][5] = data["pairs"][1]  # a copy of a positive on the other process
    data["keys"] = torch.tensor([0, 1, 2, 3, 4, 1, 6])
    data["rows"] = [torch.arange(0, 4), torch.arange(4, 7)]
    torch.multiprocessing.spawn(
        _rank_mnrl, args=(2, f"file://{tmp_path / 'init'}", str(tmp_path / "r"), data), nprocs=2
    )
    got = [torch.load(tmp_path / f"r.{r}", weights_only=True) for r in range(2)]

    parts = [data[k].clone().requires_grad_() for k in ("texts", "pairs", "negs")]
    texts, pairs, negs = parts
    # one process: each text against all 7 pairs and 7 negatives, per-rank means as each rank
    sims = F.normalize(texts, dim=-1) @ F.normalize(torch.cat([pairs, negs]), dim=-1).T * 20
    copy = torch.zeros_like(sims, dtype=torch.bool)
    copy[1, 5] = copy[5, 1] = True  # pair 5 is no negative of text 1, nor pair 1 of text 5
    per_text = F.cross_entropy(
        sims.masked_fill(copy, -torch.inf), torch.arange(7), reduction="none"
    )
    for r, rows in enumerate(data["rows"]):
        assert got[r]["loss"].item() == pytest.approx(per_text[rows].mean().item(), rel=1e-5)
    # each rank backpropagates its own mean; the gather sends every rank's gradient home
    sum(per_text[rows].mean() for rows in data["rows"]).backward()
    for i, full in enumerate(parts):
        mine = torch.cat([got[r]["grads"][i] for r in range(2)])
        assert torch.allclose(mine, full.grad, atol=1e-6), i
