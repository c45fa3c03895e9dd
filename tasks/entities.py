"""Entity spans and entity-level F1 for NER (``tasks/ner.py``).

Entities follow the CoNLL evaluation rules, as seqeval's default mode (an I- tag with no B-
starts an entity). ``EntityF1`` is a torchmetrics ``Metric`` whose state is the per-word
predictions, so it syncs across processes; its values equal ``seqeval``'s on the same word-level
tag sequences (tested).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torchmetrics import Metric


def _split(tag: str) -> tuple[str, str]:
    return (tag[0], tag[2:]) if tag != "O" else ("O", "")


def entities(tags: list[str]) -> list[tuple[str, int, int]]:
    """(type, first word, last word) of every entity in one sentence's tags (any scheme)."""
    out, begin, prev, prev_type = [], 0, "O", ""
    for i, tag in enumerate([*tags, "O"]):
        cur, typ = _split(tag)
        ends = (
            prev in ("E", "S")
            or (prev in ("B", "I") and cur in ("B", "S", "O"))
            or (prev != "O" and prev_type != typ)
        )
        if ends:
            out.append((prev_type, begin, i - 1))
        starts = (
            cur in ("B", "S")
            or (prev in ("E", "S", "O") and cur in ("E", "I"))
            or (cur != "O" and prev_type != typ)
        )
        if starts:
            begin = i
        prev, prev_type = cur, typ
    return out


def to_iob2(tags: list[str]) -> list[str]:
    """The same entities written in IOB2 (from IOB1, BIOES or ill-formed IOB2)."""
    out = ["O"] * len(tags)
    for typ, first, last in entities(tags):
        out[first] = f"B-{typ}"
        for i in range(first + 1, last + 1):
            out[i] = f"I-{typ}"
    return out


def detect_scheme(sequences: list[list[str]]) -> str:
    prefixes = {t[0] for seq in sequences for t in seq}
    if prefixes & {"E", "S"}:
        return "BIOES"
    for seq in sequences:
        prev_type = None
        for t in seq:
            p, typ = _split(t)
            if p == "I" and prev_type != typ:
                return "IOB1"
            prev_type = typ if p != "O" else None
    return "IOB2"


def entity_scores(gold: list[list[str]], pred: list[list[str]]) -> dict[str, float]:
    """Micro precision/recall/F1 over entities, plus F1 per type (seqeval's default mode)."""
    tp, n_pred, n_gold = Counter(), Counter(), Counter()
    for g, p in zip(gold, pred, strict=True):
        ge, pe = set(entities(g)), set(entities(p))
        for e in ge:
            n_gold[e[0]] += 1
        for e in pe:
            n_pred[e[0]] += 1
        for e in ge & pe:
            tp[e[0]] += 1

    def prf(t: int, np_: int, ng: int) -> tuple[float, float, float]:
        p = t / np_ if np_ else 0.0
        r = t / ng if ng else 0.0
        return p, r, (2 * p * r / (p + r) if p + r else 0.0)

    p, r, f = prf(sum(tp.values()), sum(n_pred.values()), sum(n_gold.values()))
    out = {"precision": p, "recall": r, "f1": f}
    for typ in sorted(set(n_gold) | set(n_pred)):
        out[f"f1_{typ}"] = prf(tp[typ], n_pred[typ], n_gold[typ])[2]
    return out


class EntityF1(Metric):
    """Entity-level P/R/F1 and word accuracy from per-sub-token predictions of (windowed) rows.

    ``update(preds, target)``: ``preds`` (N, 4) long = (row, word, centrality, predicted tag id)
    for each scored sub-token, ``target`` (N,) the gold tag ids. A word seen in several windows
    (or twice, from a distributed sampler's padding) counts once: the most central copy wins.
    """

    full_state_update = False

    def __init__(self, labels: list[str]) -> None:
        super().__init__()
        self.labels = list(labels)
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        self.preds.append(preds.detach().long())
        self.target.append(target.detach().long())

    def sync(self, *args: Any, **kwargs: Any) -> None:
        # A process that saw no batch holds empty lists, which torchmetrics does not gather
        # while the other processes do: the collectives mismatch and the job aborts. An empty
        # tensor is gathered like any other.
        if not self.preds:
            self.preds.append(torch.zeros(0, 4, dtype=torch.long, device=self.device))
            self.target.append(torch.zeros(0, dtype=torch.long, device=self.device))
        super().sync(*args, **kwargs)

    def compute(self) -> dict[str, torch.Tensor]:
        preds = _cat(self.preds).view(-1, 4).cpu()
        target = _cat(self.target).view(-1).cpu()
        rows = _stitch(preds, target)
        gold = [[self.labels[g] for _, g in words] for words in rows.values()]
        pred = [[self.labels[p] for p, _ in words] for words in rows.values()]
        scores = entity_scores(gold, pred)
        flat_gold = [t for seq in gold for t in seq]
        flat_pred = [t for seq in pred for t in seq]
        correct = sum(a == b for a, b in zip(flat_gold, flat_pred, strict=True))
        scores["token_acc"] = correct / len(flat_gold) if flat_gold else 0.0
        return {k: torch.tensor(v) for k, v in scores.items()}


def _stitch(
    preds: torch.Tensor, target: torch.Tensor | None = None
) -> dict[int, list[tuple[int, int]]]:
    """Packed (row, word, centrality, pred) + gold per sub-token -> row: [(pred, gold)] by word.

    A word seen in several windows counts once: its most central copy; ties are broken by value,
    so the result does not depend on the order of the copies (e.g. across processes).
    """
    preds = preds.view(-1, 4)
    gold = target.tolist() if target is not None else [0] * len(preds)  # 0: unknown (decoding)
    best: dict[tuple[int, int], tuple[int, int, int]] = {}
    for (row, word, cent, p), g in zip(preds.tolist(), gold, strict=True):
        if (row, word) not in best or (cent, -p) > best[(row, word)][:2]:
            best[(row, word)] = (cent, -p, int(g))
    rows: dict[int, list[tuple[int, int]]] = {}
    for (row, _), (_, neg_p, g) in sorted(best.items()):
        rows.setdefault(row, []).append((-neg_p, g))
    return rows


def _cat(x: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    return torch.cat(x) if x else torch.zeros(0, dtype=torch.long)


class EntityF1Chart(EntityF1):
    """Entity F1 per type as a bar chart (the final evaluation's figure)."""

    def plot(self, val: Any = None, ax: Any = None) -> Any:
        import matplotlib.pyplot as plt

        scores = val if val is not None else self.compute()
        per_type = {k[3:]: float(v) for k, v in scores.items() if k.startswith("f1_")}
        fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 4))
        bars = ax.bar(list(per_type), list(per_type.values()))
        ax.bar_label(bars, fmt="%.3f")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("entity F1")
        ax.set_title(f"entity F1 per type (all: {float(scores['f1']):.3f})")
        return fig, ax
