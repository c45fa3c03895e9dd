"""Sentence embeddings (a bi-encoder): texts and text pairs encoded separately by the same
encoder, pooled (mean or CLS) and normalised, as sentence-transformers does.

Losses: ``mnrl`` (multiple-negatives ranking: each text's pair is its positive, every other pair
and hard negative in the batch its negatives, cosine x ``scale``, cross-entropy) and ``cosent``
(for pairs with a gold ``score_column``: every pair whose gold score is lower must have a lower
cosine). Under DDP, ``mnrl`` gathers the candidates of every process with their gradients, so
the negatives grow with the number of processes. A batch holds the texts, then their pairs, then
the hard negatives, as rows of one encoder call (``collate``). Metrics: Spearman and Pearson of
the cosine against the gold scores, or, for pairs without scores, retrieval of each text's pair
among all the split's distinct pairs (recall@1/@10, MRR@10, nDCG@10). Predictions: a text's
embedding, or a pair's cosine. The export is a sentence-transformers directory that
``transformers.AutoModel`` also loads.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric, MetricCollection, PearsonCorrCoef, SpearmanCorrCoef

from framework.errors import UserError
from framework.registry import register_task
from framework.task import Batch, Prediction, StepOutput, Task, pad, require_columns
from tasks.squad import read_squad

_ST = "sentence_transformers"


@register_task("embedding")
class Embedding(Task):
    monitor = "val/mrr_at_10"  # with a score_column: set task.monitor=val/spearman
    mode = "max"
    file_format = "squad"  # data.format=squad: question -> its paragraph (retrieval pairs)
    file_suffixes = (".json",)

    def __init__(
        self,
        text_column: str = "sentence1",
        text_pair_column: str | None = "sentence2",
        score_column: str | None = None,
        negative_column: str | None = None,
        loss: str = "mnrl",
        scale: float = 20.0,
        pooling: str = "mean",
        normalize: bool = True,
    ) -> None:
        if loss not in ("mnrl", "cosent"):
            raise UserError(f"task.loss must be mnrl or cosent, not {loss!r}")
        if loss == "cosent" and not score_column:
            raise UserError("task.loss=cosent needs gold scores: set task.score_column")
        if pooling not in ("mean", "cls"):
            raise UserError(f"task.pooling must be mean or cls, not {pooling!r}")
        self.text_column, self.text_pair_column = text_column, text_pair_column
        self.score_column, self.negative_column = score_column, negative_column
        self.loss, self.scale, self.pooling, self.normalize = loss, scale, pooling, normalize

    # -- data -----------------------------------------------------------------------------------

    def read_file(self, path: Path) -> dict[str, list]:
        return read_squad(path)

    def column_types(self, split: str) -> dict[str, str]:
        columns = (self.text_column, self.text_pair_column, self.score_column, self.negative_column)
        return {c: "text" for c in columns if c}

    def check_columns(self, columns: list[str], split: str) -> None:
        wanted = [self.text_column]
        if split != "predict":
            wanted += [self.text_pair_column, self.score_column, self.negative_column]
        hint = "task.text_column / text_pair_column / score_column / negative_column"
        require_columns(columns, wanted, split, hint)

    def encode(
        self, rows: dict[str, list], indices: list[int], tokenizer: Any, max_length: int
    ) -> dict[str, list]:
        def ids(column: str) -> list[list[int]]:
            texts = ["" if t is None else str(t) for t in rows[column]]
            return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]

        out: dict[str, list] = {"input_ids": ids(self.text_column), "row": list(indices)}
        pair = self.text_pair_column
        if pair in rows and all(t is not None for t in rows[pair]):
            out["pair_ids"] = ids(pair)
            out["pair_key"] = [_key(t) for t in rows[pair]]  # a pair's identity for retrieval
        if self.negative_column in rows and "pair_ids" in out:
            out["negative_ids"] = ids(self.negative_column)
        if self.score_column in rows:
            out["score"] = [float(s) for s in rows[self.score_column]]
        return out

    def collate(self, features: list[dict[str, Any]], pad_id: int) -> Batch:
        first = features[0]
        seqs = [f["input_ids"] for f in features]
        for key in ("pair_ids", "negative_ids"):
            seqs += [f[key] for f in features] if key in first else []
        batch = {
            "input_ids": pad(seqs, pad_id),  # (B x 1-3, T): texts, pairs, negatives
            "attention_mask": pad([[1] * len(s) for s in seqs], 0),
            "row": torch.tensor([f["row"] for f in features]),  # (B,)
        }
        if "pair_key" in first:
            batch["pair_key"] = torch.tensor([f["pair_key"] for f in features])
        if "score" in first:
            batch["score"] = torch.tensor([f["score"] for f in features])
        return batch

    def text_row(self, text: str) -> dict[str, Any]:
        first, tab, second = text.partition("\t")  # a pair: the two texts separated by a tab
        return {self.text_column: first, **({self.text_pair_column: second} if tab else {})}

    def tokenizer_texts(self, rows: dict[str, list]) -> list[str]:
        cols = [c for c in (self.text_column, self.text_pair_column) if c in rows]
        return [str(t) for c in cols for t in rows[c] if t is not None]

    # -- model ----------------------------------------------------------------------------------

    def build_head(self, hidden_size: int, pretrained: dict[str, torch.Tensor]) -> nn.Module:
        return nn.Identity()  # the pooled encoder output is the embedding

    def embed(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(N, T, H) -> (N, H): mean over the real tokens, or the [CLS] vector; normalised."""
        if self.pooling == "cls":
            emb = hidden[:, 0]
        else:
            m = mask.unsqueeze(-1).to(hidden.dtype)  # (N, T, 1)
            emb = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        emb = emb.float()
        return F.normalize(emb, dim=-1) if self.normalize else emb

    def step(self, head: nn.Module, hidden: torch.Tensor, batch: Batch) -> StepOutput:
        emb = head(self.embed(hidden, batch["attention_mask"]))  # (B x 1-3, H)
        B = batch["row"].size(0)
        texts = emb[:B]
        if "pair_key" not in batch:  # texts alone (predict): their embeddings
            return StepOutput(None, texts, texts)
        pairs, negatives = emb[B : 2 * B], emb[2 * B :]
        cos = F.cosine_similarity(texts, pairs, dim=-1)  # (B,)
        score = batch.get("score")
        if self.loss == "cosent" and score is not None:
            loss = cosent_loss(cos, score, self.scale)
        elif self.loss == "mnrl":
            loss = mnrl_loss(texts, pairs, negatives, self.scale, batch["pair_key"])
        else:
            loss = None
        preds = {"cos": cos, "texts": texts, "pairs": pairs, "key": batch["pair_key"]}
        return StepOutput(loss, cos, preds, score)

    # -- metrics and outputs ------------------------------------------------------------------

    def metrics(self, split: str) -> MetricCollection:
        if self.score_column:
            return MetricCollection({"spearman": SpearmanCorrCoef(), "pearson": PearsonCorrCoef()})
        return MetricCollection({"retrieval": Retrieval()})

    def update_metrics(self, metrics: MetricCollection, out: StepOutput, batch: Batch) -> None:
        if self.score_column:
            metrics.update(out.preds["cos"], out.target)
        else:
            metrics.update(out.preds["texts"], out.preds["pairs"], out.preds["key"])

    def prediction(self, out: StepOutput, batch: Batch) -> Prediction:
        if isinstance(out.preds, dict):
            return {"row": batch["row"], "cosine": out.preds["cos"]}
        return {"row": batch["row"], "embedding": out.preds}

    def decode(self, preds: Prediction) -> dict[int, dict[str, Any]]:
        key = "cosine" if "cosine" in preds else "embedding"
        pairs = zip(preds["row"].tolist(), preds[key].tolist(), strict=True)
        return {int(r): {key: v} for r, v in pairs}

    def hf_outputs(self, output: Any, batch: Batch) -> torch.Tensor:
        return self.step(nn.Identity(), output.last_hidden_state, batch).logits

    def hf_export(
        self, hf_encoder_config: dict, hf_encoder_state: dict[str, torch.Tensor], head: nn.Module
    ) -> tuple[dict, dict[str, torch.Tensor]]:
        return {**hf_encoder_config, "architectures": ["BertModel"]}, dict(hf_encoder_state)

    def export_files(self, hf_config: dict) -> dict[str, str]:
        """The sentence-transformers files beside the ``BertModel``: its modules (transformer,
        pooling, normalisation) and their configs; texts truncated at the model's positions."""
        kinds = ["Transformer", "Pooling", *(["Normalize"] if self.normalize else [])]
        paths = ["", "1_Pooling", "2_Normalize"]
        modules = [
            {"idx": i, "name": str(i), "path": paths[i], "type": f"{_ST}.models.{kind}"}
            for i, kind in enumerate(kinds)
        ]
        max_length = min(512, hf_config["max_position_embeddings"])
        pooling = {"word_embedding_dimension": hf_config["hidden_size"],
                   "pooling_mode_cls_token": self.pooling == "cls",
                   "pooling_mode_mean_tokens": self.pooling == "mean"}  # fmt: skip
        files = {"modules.json": modules, "1_Pooling/config.json": pooling,
                 "sentence_bert_config.json": {"max_seq_length": max_length},
                 "config_sentence_transformers.json": {"similarity_fn_name": "cosine"}}  # fmt: skip
        return {name: json.dumps(v, indent=2) + "\n" for name, v in files.items()}

    # -- what the tests ask of the task ---------------------------------------------------------

    def synthetic_rows(self, n: int, seed: int) -> dict[str, list]:
        rng = random.Random(seed)
        topics = ["cats purr", "rain falls", "ships sail", "bread bakes", "birds sing", "cars race"]
        rows: dict[str, list] = {self.text_column: [], self.text_pair_column: []}
        for i in range(n):  # every pair distinct: in-batch negatives never repeat a positive
            rows[self.text_column].append(f"{topics[i % 6]} {rng.choice(['now', 'often'])} {i}")
            rows[self.text_pair_column].append(f"{i} {topics[i % 6]} here")
        if self.score_column:
            rows[self.score_column] = [5.0 if i % 2 == 0 else 1.0 for i in range(n)]
        return rows

    def hf_predictions(self, export_dir: Path, rows: list[dict[str, Any]]) -> list:
        """sentence-transformers' cosine of each pair, from the export."""
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(export_dir), device="cpu")
        a = model.encode([r[self.text_column] for r in rows], convert_to_tensor=True)
        b = model.encode([r[self.text_pair_column] for r in rows], convert_to_tensor=True)
        return F.cosine_similarity(a, b, dim=-1).tolist()

    def record_value(self, record: dict[str, Any]) -> Any:
        return record["cosine"]


def cosent_loss(cos: torch.Tensor, score: torch.Tensor, scale: float) -> torch.Tensor:
    """CoSENT (Su, 2022; sentence-transformers' ``CoSENTLoss``): log(1 + sum over pairs (i, j)
    with score_i > score_j of exp(scale (cos_j - cos_i)))."""
    diff = (cos[None, :] - cos[:, None]) * scale  # (B, B): cos_j - cos_i
    diff = diff.masked_fill(~(score[:, None] > score[None, :]), float("-inf"))
    return torch.logsumexp(torch.cat([diff.new_zeros(1), diff.flatten()]), 0)


def mnrl_loss(
    texts: torch.Tensor,
    pairs: torch.Tensor,
    negatives: torch.Tensor,
    scale: float,
    keys: torch.Tensor | None = None,
) -> torch.Tensor:
    """Multiple-negatives ranking loss: text i's positive is pair i; the candidates are every
    process's pairs then every process's hard negatives, gathered with their gradients. With
    ``keys`` (each pair's text id, (B,)), another copy of a text's own pair in the batch (SQuAD:
    two questions on one paragraph) is no negative of it: it is left out of the softmax (what
    sentence-transformers' NO_DUPLICATES batch sampler avoids by changing the batches)."""
    sizes, rank = [texts.size(0)], 0
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank = torch.distributed.get_rank()
        pairs, sizes = _gather(pairs)
        negatives, _ = _gather(negatives)
        keys = None if keys is None else _gather(keys)[0]
    candidates = torch.cat([F.normalize(pairs, dim=-1), F.normalize(negatives, dim=-1)])
    sims = F.normalize(texts, dim=-1) @ candidates.T * scale  # (B, candidates)
    labels = torch.arange(texts.size(0), device=texts.device) + sum(sizes[:rank])
    if keys is not None:
        own = keys[labels]  # (B,)
        copies = own[:, None] == keys[None, :]  # (B, pairs of every process)
        copies[torch.arange(len(labels)), labels] = False  # the positive itself stays
        copies = F.pad(copies, (0, negatives.size(0)))  # hard negatives stay
        sims = sims.masked_fill(copies, float("-inf"))
    return F.cross_entropy(sims, labels)


def _gather(x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Every process's ``x`` (N_r, ...), concatenated in rank order, with gradients flowing back
    to each process's own rows; processes may hold different N_r (padded for the collective)."""
    import torch.distributed as dist
    from torch.distributed.nn.functional import all_gather

    n = torch.tensor([x.size(0)], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, n)
    sizes = [int(s) for s in sizes]
    padded = torch.cat([x, x.new_zeros((max(sizes) - x.size(0), *x.shape[1:]))])
    if x.requires_grad:
        parts = all_gather(padded)
    else:  # ids: no gradient to send back
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
    return torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)]), sizes


def _key(text: Any) -> int:
    """A stable 63-bit id of a text (the same in every process and chunk)."""
    return int.from_bytes(hashlib.blake2b(str(text).encode(), digest_size=8).digest()) >> 1


class Retrieval(Metric):
    """Each text retrieves its own pair among the split's distinct pairs, by cosine: recall@1,
    recall@10, MRR@10 and nDCG@10 (one relevant pair per text). Written by hand: torchmetrics'
    retrieval metrics take one score per (query, document) row, and the distinct pairs are
    only known once the whole split is seen."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        for name in ("texts", "pairs", "keys"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, texts: torch.Tensor, pairs: torch.Tensor, keys: torch.Tensor) -> None:
        self.texts.append(F.normalize(texts.detach().float(), dim=-1))
        self.pairs.append(F.normalize(pairs.detach().float(), dim=-1))
        self.keys.append(keys.detach())

    def compute(self) -> dict[str, torch.Tensor]:
        texts, pairs, keys = (torch.cat(x) if isinstance(x, list) else x
                              for x in (self.texts, self.pairs, self.keys))  # fmt: skip
        corpus_keys, first = _first_of_each(keys)
        corpus = pairs[first]  # (D, H): each distinct pair once
        gold = torch.searchsorted(corpus_keys, keys)  # (Q,) the index of each text's own pair
        sims = texts @ corpus.T  # (Q, D)
        rank = (sims > sims.gather(1, gold[:, None])).sum(1) + 1  # (Q,) 1 = first
        top10 = rank <= 10
        return {
            "recall_at_1": (rank == 1).float().mean(),
            "recall_at_10": top10.float().mean(),
            "mrr_at_10": torch.where(top10, 1.0 / rank, 0.0).mean(),
            "ndcg_at_10": torch.where(top10, 1.0 / torch.log2(rank + 1.0), 0.0).mean(),
        }


def _first_of_each(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sorted distinct keys, the index of each one's first occurrence in ``keys``)."""
    distinct, inverse = torch.unique(keys, sorted=True, return_inverse=True)
    first = torch.full((distinct.numel(),), keys.numel(), dtype=torch.long, device=keys.device)
    first.scatter_reduce_(0, inverse, torch.arange(keys.numel(), device=keys.device), "amin")
    return distinct, first
