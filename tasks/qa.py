"""Extractive question answering (SQuAD): the answer is a span of the context.

Data: SQuAD JSON (``data.format=squad``: the official nested file, v1.1 or v2.0) or JSON lines
with ``question``, ``context`` and ``answers`` (a list of ``{"text", "answer_start"}``, or the
Hugging Face ``{"text": [...], "answer_start": [...]}``). A context longer than
``data.max_length`` is split into windows that overlap by ``doc_stride`` tokens; each window
keeps its tokens' character offsets in the context. Training labels a window with the answer's
first and last token, or with [CLS] when the answer is not inside it (as BERT and the Hugging Face
scripts do).

Decoding: in every window, the ``n_best`` spans with the highest start + end logit among spans
inside the context of at most ``max_answer_length`` tokens; the question's answer is the best
span over its windows, cut from the context by character offsets. With ``unanswerable`` (SQuAD
v2) the empty answer wins when [CLS]'s score is higher. Metrics: exact match and F1 as the
official SQuAD v1.1 evaluation computes them (torchmetrics' ``SQuAD``, tested against the
official logic); unanswerable gold questions score 1 for an empty answer, as the v2.0 script.
The metric, the SQuAD reader and the span choice are in ``tasks/squad.py``. The export is a
``BertForQuestionAnswering``.

``python -m tasks.squad_split FILE OUT_DIR`` splits a SQuAD file by article (no train set
ships with SQuAD's dev file).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection

from framework.errors import UserError
from framework.registry import register_task
from framework.task import Batch, Prediction, StepOutput, Task, pad, pad_tokens, require_columns
from tasks.squad import SquadScores, answers_of, best_answers, read_squad


@register_task("qa")
class QuestionAnswering(Task):
    monitor = "val/f1"
    mode = "max"
    file_format = "squad"  # data.format=squad; the default for .json files
    file_suffixes = (".json",)

    def __init__(
        self,
        question_column: str = "question",
        context_column: str = "context",
        answers_column: str = "answers",
        doc_stride: int = 128,
        max_answer_length: int = 30,
        n_best: int = 20,
        unanswerable: bool = False,
        dropout: float = 0.1,
    ) -> None:
        for key, value in (
            ("doc_stride", doc_stride),
            ("max_answer_length", max_answer_length),
            ("n_best", n_best),
        ):
            if value < 1:
                raise UserError(f"task.{key} must be >= 1, got {value}")
        self.question_column, self.context_column = question_column, context_column
        self.answers_column = answers_column
        self.doc_stride, self.max_answer_length = doc_stride, max_answer_length
        self.n_best, self.unanswerable, self.dropout = n_best, unanswerable, dropout
        self._rows: dict[str, dict[str, list]] = {}

    # -- data -----------------------------------------------------------------------------------

    def read_file(self, path: Path) -> dict[str, list]:
        return read_squad(path)

    def check_columns(self, columns: list[str], split: str) -> None:
        wanted = [self.question_column, self.context_column]
        if split != "predict":
            wanted.append(self.answers_column)
        hint = "task.question_column / task.context_column / task.answers_column"
        require_columns(columns, wanted, split, hint)

    def keep_rows(self, split: str, rows: dict[str, list]) -> None:
        kept = {"context": [str(c) for c in rows[self.context_column]]}
        if self.answers_column in rows:
            kept["answers"] = rows[self.answers_column]
        self._rows[split] = kept

    def encode(
        self, rows: dict[str, list], indices: list[int], tokenizer: Any, max_length: int
    ) -> dict[str, list]:
        questions = [str(q).lstrip() for q in rows[self.question_column]]  # as HF's scripts
        contexts = [str(c) for c in rows[self.context_column]]
        labelled = self.answers_column in rows
        try:
            enc = tokenizer(
                questions,
                contexts,
                truncation="only_second",
                max_length=max_length,
                stride=min(self.doc_stride, max_length // 2),
                return_overflowing_tokens=True,
                return_offsets_mapping=True,
            )
        except Exception as e:  # a question longer than a window leaves no room for context
            raise UserError(
                f"cannot fit questions and contexts in data.max_length={max_length} with "
                f"task.doc_stride={self.doc_stride} ({str(e).splitlines()[0]}); raise "
                "data.max_length or lower task.doc_stride"
            ) from None
        out: dict[str, list] = {
            k: [] for k in ("input_ids", "token_type_ids", "row", "starts", "ends")
        }
        if labelled:
            out["start_positions"], out["end_positions"] = [], []
        if labelled:
            for r, value in enumerate(rows[self.answers_column]):
                check_answer(contexts[r], answers_of(value), indices[r])
        reach = [0] * len(contexts)  # the last context character each row's windows hold
        for w, r in enumerate(enc["overflow_to_sample_mapping"]):
            in_context = [s == 1 for s in enc.sequence_ids(w)]
            offsets = enc["offset_mapping"][w]
            starts = [o[0] if c else -1 for o, c in zip(offsets, in_context, strict=True)]
            ends = [o[1] if c else -1 for o, c in zip(offsets, in_context, strict=True)]
            out["input_ids"].append(enc["input_ids"][w])
            types = enc.get("token_type_ids")
            out["token_type_ids"].append(types[w] if types else [0] * len(enc["input_ids"][w]))
            out["row"].append(indices[r])
            out["starts"].append(starts)
            out["ends"].append(ends)
            reach[r] = max(reach[r], *ends)
            if labelled:
                s, e = self._label(rows[self.answers_column][r], starts, ends, indices[r])
                out["start_positions"].append(s)
                out["end_positions"].append(e)
        _check_windows_cover(contexts, reach, indices)
        return out

    def _label(self, value: Any, starts: list[int], ends: list[int], row: int) -> tuple[int, int]:
        """The answer's first and last token in this window, or (0, 0): [CLS]."""
        answers = answers_of(value)
        if not answers:
            if not self.unanswerable:
                raise UserError(
                    f"row {row + 1} has no answer; set task.unanswerable=true for SQuAD v2 data"
                )
            return 0, 0
        text, char_start = answers[0]
        char_end = char_start + len(text)
        tokens = [i for i, s in enumerate(starts) if s >= 0]
        if not tokens or starts[tokens[0]] > char_start or ends[tokens[-1]] < char_end:
            return 0, 0  # not (wholly) in this window
        first = max(i for i in tokens if starts[i] <= char_start)
        last = min(i for i in tokens if ends[i] >= char_end)
        return first, last

    def collate(self, features: list[dict[str, Any]], pad_id: int) -> Batch:
        batch = pad_tokens(features, pad_id)
        batch["starts"] = pad([f["starts"] for f in features], -1)
        batch["ends"] = pad([f["ends"] for f in features], -1)
        if "start_positions" in features[0]:
            for key in ("start_positions", "end_positions"):
                batch[key] = torch.tensor([f[key] for f in features], dtype=torch.long)
        return batch

    def text_row(self, text: str) -> dict[str, Any]:
        question, tab, context = text.partition("\t")
        if not tab:
            raise UserError("a QA input line is: question<TAB>context (or a JSON object)")
        return {self.question_column: question, self.context_column: context}

    # -- model ----------------------------------------------------------------------------------

    def build_head(self, hidden_size: int, pretrained: dict[str, torch.Tensor]) -> nn.Module:
        head = nn.Linear(hidden_size, 2)  # start and end logit per token (qa_outputs)
        nn.init.normal_(head.weight, std=0.02)
        nn.init.zeros_(head.bias)
        return head

    def step(self, head: nn.Module, hidden: torch.Tensor, batch: Batch) -> StepOutput:
        logits = head(hidden).float()  # (B, T, 2)
        start, end = logits.unbind(-1)  # (B, T) each
        loss = None
        if "start_positions" in batch:
            # Padding is not a candidate position: left in the softmax, the unpadded encoder's
            # zero output there gives every pad the logit `bias`, a floor that the answer's
            # logit has to beat (and that moves with the batch's longest row).
            pad = ~batch["attention_mask"].bool()
            loss = (
                F.cross_entropy(start.masked_fill(pad, -1e4), batch["start_positions"])
                + F.cross_entropy(end.masked_fill(pad, -1e4), batch["end_positions"])
            ) / 2
        scores, first, last = self.spans(start, end, batch["starts"] >= 0, self.n_best)
        starts = torch.gather(batch["starts"], 1, first)  # (B, K) character offsets
        ends = torch.gather(batch["ends"], 1, last)
        valid = torch.isfinite(scores)
        spans = {
            "score": scores.masked_fill(~valid, -1e9),
            "start": starts.masked_fill(~valid, -1),
            "end": ends.masked_fill(~valid, -1),
            "null": start[:, 0] + end[:, 0],
        }
        return StepOutput(loss, logits, spans, None)

    def spans(
        self, start: torch.Tensor, end: torch.Tensor, context: torch.Tensor, k: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The ``k`` best spans of each window: (scores, first token, last token), (B, K) each;
        a span lies in the context and is at most ``max_answer_length`` tokens long."""
        T = start.size(1)
        scores = start[:, :, None] + end[:, None, :]  # (B, T, T): first x last
        i = torch.arange(T, device=start.device)
        length = i[None, :] - i[:, None]  # last - first
        ok = (length >= 0) & (length < self.max_answer_length)
        ok = ok[None] & context[:, :, None] & context[:, None, :]
        top = scores.masked_fill(~ok, float("-inf")).flatten(1).topk(min(k, T * T), dim=1)
        return top.values, top.indices // T, top.indices % T

    def update_metrics(self, metrics: MetricCollection, out: StepOutput, batch: Batch) -> None:
        p = out.preds
        metrics.update(batch["row"], p["score"][:, 0], p["start"][:, 0], p["end"][:, 0], p["null"])

    def metrics(self, split: str) -> MetricCollection:
        def rows_of() -> dict[str, list]:
            return self._rows[split]

        return MetricCollection({"squad": SquadScores(rows_of, self.unanswerable)})

    def prediction(self, out: StepOutput, batch: Batch) -> Prediction:
        return {"row": batch["row"], **out.preds}

    def decode(self, preds: Prediction) -> dict[int, dict[str, Any]]:
        """Per row: the answer text, its score and character span, and the n-best spans."""
        contexts = self._rows["predict"]["context"]
        candidates: dict[int, dict[tuple[int, int], float]] = {}
        windows = []
        for row, scores, starts, ends, null in zip(
            *(preds[k].tolist() for k in ("row", "score", "start", "end", "null")), strict=True
        ):
            spans = candidates.setdefault(row, {})
            for score, s, e in zip(scores, starts, ends, strict=True):
                if s >= 0 and score > spans.get((s, e), float("-inf")):
                    spans[(s, e)] = score
            windows.append((row, scores[0], starts[0], ends[0], null))
        answers = best_answers(windows, contexts, self.unanswerable)
        out = {}
        for row, (text, score) in answers.items():
            ranked = sorted(candidates[row].items(), key=lambda x: -x[1])[: self.n_best]
            span = next(((s, e) for (s, e), _ in ranked if contexts[row][s:e] == text), (-1, -1))
            out[row] = {
                "answer": text,
                "score": round(score, 4),
                "start": span[0],
                "end": span[1],
                "n_best": [
                    {"text": contexts[row][s:e], "score": round(v, 4), "start": s}
                    for (s, e), v in ranked
                ],
            }
        return out

    def hf_outputs(self, output: Any, batch: Batch) -> torch.Tensor:
        return torch.stack([output.start_logits, output.end_logits], -1)  # (B, T, 2)

    def hf_export(
        self, hf_encoder_config: dict, hf_encoder_state: dict[str, torch.Tensor], head: nn.Module
    ) -> tuple[dict, dict[str, torch.Tensor]]:
        config = {**hf_encoder_config, "architectures": ["BertForQuestionAnswering"]}
        state = {f"bert.{k}": v for k, v in hf_encoder_state.items() if not k.startswith("pooler")}
        state["qa_outputs.weight"] = head.weight
        state["qa_outputs.bias"] = head.bias
        return config, state

    def synthetic_rows(self, n: int, seed: int) -> dict[str, list]:
        rng = random.Random(seed)
        names, places = ["alice", "bob", "carol", "dave"], ["paris", "oslo", "lima", "rome"]
        rows: dict[str, list] = {
            self.question_column: [],
            self.context_column: [],
            self.answers_column: [],
        }
        for _ in range(n):
            who, where = rng.choice(names), rng.choice(places)
            context = f"{who} flew to {where} on monday and stayed a week ."
            rows[self.question_column].append("where did the traveller fly to ?")
            rows[self.context_column].append(context)
            rows[self.answers_column].append(
                [{"text": where, "answer_start": context.index(where)}]
            )
        return rows

    def predict_rows(self, n: int, seed: int) -> dict[str, list]:
        rows = self.synthetic_rows(n, seed)  # of varied lengths: sorting by length reorders them
        rows[self.context_column] = [
            c + " and then" * i for i, c in enumerate(rows[self.context_column])
        ]
        return rows

    def hf_predictions(self, export_dir: Path, rows: list[dict[str, Any]]) -> list:
        """The exported model's best span of at most 30 tokens (transformers 5 has no
        question-answering pipeline)."""
        import transformers

        tok = transformers.AutoTokenizer.from_pretrained(export_dir)
        model = transformers.AutoModelForQuestionAnswering.from_pretrained(export_dir).eval()
        out = []
        for r in rows:
            context = r[self.context_column]
            enc = tok(r[self.question_column], context, return_offsets_mapping=True)
            offsets = enc.pop("offset_mapping")
            with torch.no_grad():
                o = model(**{k: torch.tensor([v]) for k, v in enc.items()})
            ctx = [i for i, s in enumerate(enc.sequence_ids()) if s == 1]
            spans = [(i, j) for i in ctx for j in ctx if 0 <= j - i < 30]
            i, j = max(spans, key=lambda p: float(o.start_logits[0, p[0]] + o.end_logits[0, p[1]]))
            out.append(context[offsets[i][0] : offsets[j][1]])
        return out

    def record_value(self, record: dict[str, Any]) -> Any:
        return record["answer"]


def check_answer(context: str, answers: list[tuple[str, int]], row: int) -> None:
    """A ``UserError`` when the answer trained on is not where its ``answer_start`` says in the
    context: a wrong offset would train a wrong span, silently."""
    if not answers:
        return
    text, start = answers[0]
    found = context[start : start + len(text)] if start >= 0 else ""
    if found != text:
        raise UserError(
            f"row {row + 1}: the answer {text[:40]!r} is not at answer_start={start} of its "
            f"context (there: {found[:40]!r}); fix answer_start (a character offset into the "
            "context)"
        )


def _check_windows_cover(contexts: list[str], reach: list[int], indices: list[int]) -> None:
    """Every word of every context lies in some window: a tokenizer that drops overflowing
    windows (tokenizers 0.23.2 keeps only the first two of a text pair) would silently cost
    answers, so it is refused."""
    lost = [i for i, (c, end) in enumerate(zip(contexts, reach, strict=True))
            if any(ch.isalnum() for ch in c[end:])]  # fmt: skip
    if lost:
        import tokenizers

        raise UserError(
            f"the tokenizer left the end of {len(lost)} of {len(contexts)} contexts out of every "
            f"window (first: row {indices[lost[0]] + 1}; tokenizers {tokenizers.__version__}, and "
            "0.23.2 drops overflowing windows of text pairs): install tokenizers>=0.23.3"
        )
