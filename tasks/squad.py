"""SQuAD for extractive QA (``tasks/qa.py``; ``tasks/embedding.py`` reads the files too): the
official JSON layout, the choice of a question's answer among its windows' spans, and EM/F1 as
the official v1.1 evaluation computes them (torchmetrics' ``squad``, its port; tested against the
official logic)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torchmetrics import Metric
from torchmetrics.functional.text import squad

from framework.errors import UserError
from framework.readers import read_utf8


def read_squad(path: Path) -> dict[str, list]:
    """The rows of a SQuAD JSON file (``squad_rows``), or a one-line error naming it."""
    try:
        data = json.loads(read_utf8(path))
    except json.JSONDecodeError as e:
        raise UserError(
            f"{path} is not one JSON document ({e.msg}, line {e.lineno}); for JSON lines "
            "use data.format=jsonl"
        ) from None
    if not isinstance(data, dict) or "data" not in data:
        raise UserError(f"{path} is not SQuAD JSON (no top-level 'data' list of articles)")
    rows = squad_rows(data)
    if not rows["id"]:
        raise UserError(f"{path} holds no questions")
    return rows


def squad_rows(data: dict) -> dict[str, list]:
    """A SQuAD JSON document -> one row per question (id, title, context, question, answers)."""
    rows: dict[str, list] = {k: [] for k in ("id", "title", "context", "question", "answers")}
    for article in data.get("data", []):
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                rows["id"].append(str(qa["id"]))
                rows["title"].append(article.get("title", ""))
                rows["context"].append(paragraph["context"])
                rows["question"].append(qa["question"])
                answers = [] if qa.get("is_impossible") else qa.get("answers", [])
                rows["answers"].append(
                    [{"text": a["text"], "answer_start": int(a["answer_start"])} for a in answers]
                )
    return rows


def answers_of(value: Any) -> list[tuple[str, int]]:
    """(text, character start) of each gold answer, from either answers layout."""
    if value is None:
        return []
    if isinstance(value, dict):  # {"text": [...], "answer_start": [...]}
        return list(zip(map(str, value["text"]), map(int, value["answer_start"]), strict=True))
    return [(str(a["text"]), int(a["answer_start"])) for a in value]


class SquadScores(Metric):
    """Exact match and F1 (0-100) of each question's best span over its windows.

    ``update(rows, scores, starts, ends)``: per window, the question's row id, the best span's
    score and its character start/end. ``rows_of()`` gives the split's raw rows (contexts and gold
    answers), which the task keeps (``Task.keep_rows``).
    """

    full_state_update = False

    def __init__(self, rows_of: Any, unanswerable: bool) -> None:
        super().__init__()
        self.rows_of, self.unanswerable = rows_of, unanswerable
        for name in ("rows", "scores", "starts", "ends", "null"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, rows, scores, starts, ends, null) -> None:  # (W,) each
        for name, value in zip(
            ("rows", "scores", "starts", "ends", "null"),
            (rows, scores, starts, ends, null),
            strict=True,
        ):
            getattr(self, name).append(value.detach())

    def compute(self) -> dict[str, torch.Tensor]:
        def cat(x):
            return torch.cat(x) if isinstance(x, list) else x

        windows = zip(
            *(cat(getattr(self, n)).tolist() for n in ("rows", "scores", "starts", "ends", "null")),
            strict=True,
        )
        answers = best_answers(windows, self.rows_of()["context"], self.unanswerable)
        gold = self.rows_of()["answers"]
        preds, targets, empty_em = [], [], []
        for row, (text, _) in answers.items():
            golds = [t for t, _ in answers_of(gold[row])]
            if not golds:  # unanswerable (v2): right only when the answer is empty
                empty_em.append(float(text == ""))
                continue
            preds.append({"prediction_text": text, "id": str(row)})
            targets.append(
                {"answers": {"text": golds, "answer_start": [0] * len(golds)}, "id": str(row)}
            )
        n = max(len(preds) + len(empty_em), 1)
        hits_em = hits_f1 = 0.0
        if preds:  # the official v1.1 logic (torchmetrics' port), in percent
            scores = squad(preds, targets)
            hits_em = float(scores["exact_match"]) / 100 * len(preds)
            hits_f1 = float(scores["f1"]) / 100 * len(preds)
        em = torch.tensor(100.0 * (hits_em + sum(empty_em)) / n)
        f1 = torch.tensor(100.0 * (hits_f1 + sum(empty_em)) / n)
        return {"exact_match": em.float(), "f1": f1.float()}


def best_answers(windows, contexts: list[str], unanswerable: bool) -> dict[int, tuple[str, float]]:
    """Per row: (answer text, score) of the best span over its windows ("" when unanswerable
    and [CLS] scores higher than every span). ``windows``: (row, score, start, end, null)."""
    best: dict[int, tuple[float, int, int]] = {}
    null: dict[int, float] = {}
    for row, score, start, end, null_score in windows:
        row = int(row)
        null[row] = min(null.get(row, float("inf")), null_score)
        if row not in best or score > best[row][0]:
            best[row] = (score, int(start), int(end))
    out = {}
    for row, (score, start, end) in best.items():
        empty = start < 0 or (unanswerable and null[row] > score)
        out[row] = ("" if empty else contexts[row][start:end], score)
    return out
