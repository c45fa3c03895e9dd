"""Extractive QA: EM/F1 equal to the official SQuAD v1.1 evaluation, windows and offsets that
recover every gold answer, SQuAD files read and split by article."""

from __future__ import annotations

import json
import re
import string
import subprocess
import sys
from collections import Counter

import pytest
import torch

from framework.errors import UserError
from tasks.qa import QuestionAnswering, _check_windows_cover
from tasks.squad import SquadScores
from tests.conftest import ROOT

SQUAD = ROOT.parent / "shared" / "data" / "squad" / "dev-v1.1.json"


# The official SQuAD v1.1 evaluation (evaluate-v1.1.py), written out as the reference.
def _normalize(s: str) -> str:
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def _f1(prediction: str, truth: str) -> float:
    p, t = _normalize(prediction).split(), _normalize(truth).split()
    same = sum((Counter(p) & Counter(t)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(t)
    return 2 * precision * recall / (precision + recall)


def official(predictions: list[str], golds: list[list[str]]) -> dict[str, float]:
    em = sum(
        max(_normalize(p) == _normalize(g) for g in gs)
        for p, gs in zip(predictions, golds, strict=True)
    )
    f1 = sum(max(_f1(p, g) for g in gs) for p, gs in zip(predictions, golds, strict=True))
    return {"exact_match": 100.0 * em / len(golds), "f1": 100.0 * f1 / len(golds)}


CASES = [  # (context, prediction span, gold answers)
    ("The Broncos won Super Bowl 50.", "The Broncos", ["Broncos", "Denver Broncos"]),
    ("It cost $1.2 billion, (approx.)", "$1.2 billion,", ["1.2 billion"]),
    ("An apple a day keeps the doctor away", "apple a day", ["an apple", "the apple day"]),
    ("Nikola Tesla was born in 1856 in Smiljan.", "1856 in Smiljan", ["Smiljan", "1856"]),
    ("Nothing matches here at all", "matches", ["completely different"]),
    ("UPPER case Words", "upper CASE words", ["Upper Case Words"]),
]


def test_exact_match_and_f1_equal_the_official_evaluation():
    contexts, windows, golds, preds = [], [], [], []
    for row, (context, pred, gold) in enumerate(CASES):
        context = context if pred in context else f"{context} {pred}"
        start = context.index(pred)
        contexts.append(context)
        golds.append(gold)
        preds.append(pred)
        # two windows per question: the better-scored one holds the prediction
        windows.append((row, 5.0, start, start + len(pred), -1.0))
        windows.append((row, 1.0, 0, 2, -1.0))
    rows = {"context": contexts, "answers": [[{"text": g, "answer_start": 0} for g in gs]
                                              for gs in golds]}  # fmt: skip
    metric = SquadScores(lambda: rows, unanswerable=False)
    cols = [torch.tensor(c) for c in zip(*windows, strict=True)]
    metric.update(cols[0].long(), cols[1], cols[2].long(), cols[3].long(), cols[4])
    ours = {k: float(v) for k, v in metric.compute().items()}
    reference = official(preds, golds)
    assert ours == pytest.approx(reference, abs=1e-4)
    assert 0 < reference["exact_match"] < reference["f1"] < 100  # the cases are not trivial


def _perfect_logits(batch: dict) -> torch.Tensor:
    """Start/end logits that point at the labelled tokens (CLS where the window has none)."""
    logits = torch.full((*batch["input_ids"].shape, 2), -10.0)
    b = torch.arange(len(logits))
    logits[b, batch["start_positions"], 0] = 10.0
    logits[b, batch["end_positions"], 1] = 10.0
    return logits


@pytest.mark.skipif(not SQUAD.is_file(), reason="needs ../shared/data/squad")
def test_windows_and_offsets_recover_every_gold_answer(tokenizer):
    task = QuestionAnswering(doc_stride=32)
    rows = task.read_file(SQUAD)
    assert len(rows["id"]) == 10570 and rows["id"][0] == "56be4db0acb8001400a502ec"
    n = 300
    sub = {k: v[:n] for k, v in rows.items()}
    task.keep_rows("val", sub)
    cols = task.encode(sub, list(range(n)), tokenizer, max_length=96)
    features = [dict(zip(cols, v, strict=True)) for v in zip(*cols.values(), strict=True)]
    assert len(features) > n  # long contexts: several windows each
    metric = task.metrics("val")
    for i in range(0, len(features), 64):
        batch = task.collate(features[i : i + 64], tokenizer.pad_token_id)
        logits = _perfect_logits(batch)
        start, end = logits.unbind(-1)
        scores, first, last = task.spans(start, end, batch["starts"] >= 0, 1)
        # a window without the answer scores its spans low: the answer's window wins
        chars = (
            torch.gather(batch["starts"], 1, first)[:, 0],
            torch.gather(batch["ends"], 1, last)[:, 0],
        )
        metric.update(batch["row"], scores[:, 0], *chars, start[:, 0] + end[:, 0])
    values = metric.compute()
    # The misses (10 of 300) are answers that begin or end inside a WordPiece token ("gold" of
    # "golden", "8" of "18"): a token span cannot cut them out, in any BERT QA model.
    assert float(values["exact_match"]) >= 96.0 and float(values["f1"]) >= 96.0


@pytest.mark.skipif(not SQUAD.is_file(), reason="needs ../shared/data/squad")
def test_split_by_article_command(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "tasks.squad_split", str(SQUAD), str(tmp_path),
         "--dev-articles", "8"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    train, dev = (
        json.loads((tmp_path / f"{s}.json").read_text())["data"] for s in ("train", "dev")
    )
    assert len(dev) == 8 and len(train) == 40
    assert not {a["title"] for a in train} & {a["title"] for a in dev}
    task = QuestionAnswering()
    n = sum(len(task.read_file(tmp_path / f"{s}.json")["id"]) for s in ("train", "dev"))
    assert n == 10570


def test_unanswerable_prefers_the_empty_answer_when_cls_scores_higher():
    answers = [[], [{"text": "France", "answer_start": 12}]]
    rows = {"context": ["Paris is in France."] * 2, "answers": answers}
    metric = SquadScores(lambda: rows, unanswerable=True)
    # row 0: [CLS] (null 9) beats the span (5): empty answer, right; row 1: the span wins
    metric.update(torch.tensor([0, 1]), torch.tensor([5.0, 7.0]), torch.tensor([0, 12]),
                  torch.tensor([5, 18]), torch.tensor([9.0, 1.0]))  # fmt: skip
    values = metric.compute()
    assert float(values["exact_match"]) == 100.0


def test_loss_of_a_window_does_not_depend_on_the_padding_beside_it():
    task = QuestionAnswering()
    head = torch.nn.Linear(4, 2)
    torch.nn.init.normal_(head.bias, std=1.0)  # pads would score the bias if left in
    hidden = torch.randn(1, 5, 4)
    short = {"attention_mask": torch.ones(1, 5, dtype=torch.long),
             "starts": torch.tensor([[-1, 0, 2, 4, -1]]), "ends": torch.tensor([[-1, 1, 3, 5, -1]]),
             "start_positions": torch.tensor([1]), "end_positions": torch.tensor([2])}  # fmt: skip
    padded = {k: v for k, v in short.items()}
    padded["attention_mask"] = torch.cat([short["attention_mask"], torch.zeros(1, 7).long()], 1)
    for key in ("starts", "ends"):
        padded[key] = torch.cat([short[key], torch.full((1, 7), -1)], 1)
    # the unpadded encoder's output at padding: zeros
    with_pads = torch.cat([hidden, torch.zeros(1, 7, 4)], 1)
    a = task.step(head, hidden, short).loss
    b = task.step(head, with_pads, padded).loss
    assert torch.allclose(a, b, atol=1e-6) and a > 0


def test_a_tokenizer_that_drops_windows_is_refused():
    # tokenizers 0.23.2 (the GPU image's) kept only two windows of a text pair: the rest of the
    # context, and the answers in it, vanished without a word.
    contexts = ["Denver won the game.  ", "Carolina lost, 24-10 ...", "short"]
    _check_windows_cover(contexts, [19, 20, 5], [0, 1, 2])  # only spaces and dots left over
    with pytest.raises(UserError, match=r"1 of 3 contexts .* \(first: row 8;.*>=0\.23\.3"):
        _check_windows_cover(contexts, [19, 12, 5], [3, 7, 9])  # "24-10" is in no window
