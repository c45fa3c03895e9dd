"""Named-entity recognition (token classification) with exact entity-level F1.

Data: CoNLL column files (``read_file``), JSON lines or hub data sets with lists of words and tags.
Tags in IOB1, IOB2 or BIOES are normalised to IOB2 (entity spans are kept exactly). Words are
split into sub-tokens with the fast tokenizer's ``word_ids``; the first sub-token carries the
word's label. A sentence longer than ``max_length`` is split into overlapping windows, and each
word is predicted from the window where it is farthest from an edge, so no word is dropped from
training or evaluation.

The metric, entity spans and tag schemes are in ``tasks/entities.py``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection

from framework.errors import UserError
from framework.heads import Transform
from framework.readers import CHUNK_ROWS, read_lines, then_blank
from framework.registry import register_task
from framework.task import Batch, Prediction, StepOutput, Task, pad, pad_tokens, require_columns
from framework.tokenizer import words_as_in_text
from tasks.entities import EntityF1, EntityF1Chart, _stitch, detect_scheme, entities, to_iob2

log = logging.getLogger(__name__)
IGNORE = -100
CONLL_SUFFIXES = (".txt", ".conll", ".iob", ".bio")


# ------------------------------------------------------------------------------------------------
# The task
# ------------------------------------------------------------------------------------------------


@register_task("ner")
class NER(Task):
    """Token classification over words. ``labels``: IOB2 tags in id order (None: from train)."""

    monitor = "val/f1"
    mode = "max"

    def __init__(
        self,
        tokens_column: str = "tokens",
        tags_column: str = "tags",
        token_field: int = 0,
        tag_field: int = -1,
        scheme: str = "auto",
        labels: list[str] | None = None,
        label_all_tokens: bool = False,
        stride: int = 32,
        unknown_tag: str = "error",
        dropout: float = 0.1,
    ) -> None:
        if scheme not in ("auto", "IOB1", "IOB2", "BIOES"):
            raise UserError(f"task.scheme must be auto, IOB1, IOB2 or BIOES, not {scheme!r}")
        if unknown_tag not in ("error", "O"):
            raise UserError(f"task.unknown_tag must be 'error' or 'O', not {unknown_tag!r}")
        self.tokens_column, self.tags_column = tokens_column, tags_column
        self.token_field, self.tag_field = token_field, tag_field
        self.scheme, self.labels = scheme, list(labels) if labels is not None else None
        self.label_all_tokens, self.stride = label_all_tokens, stride
        self.unknown_tag, self.dropout = unknown_tag, dropout

    # -- data -----------------------------------------------------------------------------------

    file_format = "conll"  # data.format=conll; the default for these suffixes
    file_suffixes = CONLL_SUFFIXES

    def read_chunks(self, path: Path) -> Iterator[dict[str, list]]:
        """Sentences of a CoNLL column file: one word per line, blank lines between sentences;
        read incrementally, ``CHUNK_ROWS`` sentences a chunk."""
        tokens, tags, words, wtags, width, any_sentence = [], [], [], [], None, False
        for n, line in then_blank(read_lines(path)):
            fields = line.split()
            if fields and fields[0] == "-DOCSTART-":
                continue
            if not fields:
                if words:
                    tokens.append(words)
                    tags.append(wtags)
                    words, wtags = [], []
                    if len(tokens) == CHUNK_ROWS:
                        yield {self.tokens_column: tokens, self.tags_column: tags}
                        tokens, tags, any_sentence = [], [], True
                continue
            if width is None:
                width = len(fields)
                for key in ("token_field", "tag_field"):
                    index = getattr(self, key)
                    if not -width <= index < width:
                        raise UserError(
                            f"task.{key}={index} is not a column of {path} (its word lines have "
                            f"{width} columns); use an index from {-width} to {width - 1}"
                        )
            if len(fields) != width:
                raise UserError(
                    f"{path}:{n}: {len(fields)} columns where the file has {width}; every word "
                    "line needs the same columns (word ... tag)"
                )
            words.append(fields[self.token_field])
            wtags.append(fields[self.tag_field])
        if not tokens and not any_sentence:
            raise UserError(f"{path} has no sentences; a CoNLL file needs word lines")
        if tokens:
            yield {self.tokens_column: tokens, self.tags_column: tags}

    def column_types(self, split: str) -> dict[str, str]:
        return {self.tokens_column: "list", self.tags_column: "list"}

    def check_columns(self, columns: list[str], split: str) -> None:
        wanted = [self.tokens_column, self.tags_column if split != "predict" else None]
        require_columns(columns, wanted, split, "task.tokens_column / task.tags_column")

    def text_row(self, text: str) -> dict[str, Any]:
        return {self.tokens_column: text.split()}  # words separated by white space

    def tokenizer_texts(self, rows: dict[str, list]) -> list[str]:
        return [" ".join(map(str, words)) for words in rows[self.tokens_column]]

    def setup(self, train_chunks: Iterable[dict[str, list]]) -> None:
        # chunk by chunk: a chunk's scheme, the strongest evidence winning (BIOES > IOB1 >
        # IOB2: detect_scheme of the whole split), and the entity types of its IOB2 form
        schemes, types = set(), set()
        for chunk in train_chunks:
            tags = [[str(t) for t in seq] for seq in chunk[self.tags_column]]
            check_prefixes(tags, self.tags_column)
            if self.scheme == "auto":
                schemes.add(detect_scheme(tags))
            if self.labels is None:
                types.update(t[2:] for seq in tags for t in to_iob2(seq) if t != "O")
        if self.scheme == "auto":
            self.scheme = next(s for s in ("BIOES", "IOB1", "IOB2") if s in schemes or s == "IOB2")
            log.info("NER tag scheme detected: %s", self.scheme)
        if self.labels is None:
            if not types:
                raise UserError(
                    f"every tag of the train split is O (column {self.tags_column!r}): there is "
                    "no entity to learn; check task.tags_column (or task.tag_field for CoNLL)"
                )
            self.labels = ["O", *(f"{p}-{typ}" for typ in sorted(types) for p in "BI")]
        if "O" not in self.labels:
            raise UserError("task.labels must contain 'O'")
        missing = [_inside(t) for t in self.labels if _inside(t) not in self.labels]
        if missing:
            raise UserError(f"task.labels lacks {missing}: every B-X tag needs its I-X tag")
        self._label_to_id = {t: i for i, t in enumerate(self.labels)}

    def state_dict(self) -> dict[str, Any]:
        return {"labels": self.labels, "scheme": self.scheme}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.labels, self.scheme = state["labels"], state["scheme"]
        self._label_to_id = {t: i for i, t in enumerate(self.labels)}

    def _tag_ids(self, tags: list[str]) -> list[int]:
        out = []
        for t in to_iob2([str(t) for t in tags]):
            if t not in self._label_to_id:
                if self.unknown_tag == "error":
                    raise UserError(
                        f"tag {t!r} is not in the label set {self.labels}; fix the data, add it "
                        "to task.labels, or set task.unknown_tag=O to map it to O"
                    )
                log.warning("tag %r is not in the label set: mapped to O", t)
                t = "O"
            out.append(self._label_to_id[t])
        return out

    def encode(
        self, rows: dict[str, list], indices: list[int], tokenizer: Any, max_length: int
    ) -> dict[str, list]:
        labelled = self.tags_column in rows
        all_tags = rows[self.tags_column] if labelled else [None] * len(indices)
        for r, (ws, ts) in enumerate(zip(rows[self.tokens_column], all_tags, strict=True)):
            if ts is None and not labelled:  # predict: words only
                ts = ws
            if not isinstance(ws, list) or not isinstance(ts, list):
                raise UserError(
                    f"row {indices[r] + 1}: columns {self.tokens_column!r} and "
                    f"{self.tags_column!r} must hold lists (one entry per word)"
                )
            if len(ws) != len(ts):
                raise UserError(
                    f"row {indices[r] + 1} has {len(ws)} tokens but {len(ts)} tags; every token "
                    f"of {self.tokens_column!r} needs one tag in {self.tags_column!r}"
                )
        words = [[str(w) for w in ws] for ws in rows[self.tokens_column]]
        enc = self._tokenize(words, tokenizer, max_length)
        # A word with no sub-token (e.g. a lone control character) would vanish from training
        # and evaluation: write it as [UNK] and tokenize again.
        seen: dict[int, set[int]] = {}
        for w, r in enumerate(enc["overflow_to_sample_mapping"]):
            seen.setdefault(r, set()).update(i for i in enc.word_ids(w) if i is not None)
        lost = [(r, i) for r, ws in enumerate(words) for i in range(len(ws)) if i not in seen[r]]
        if lost:
            for r, i in lost:
                words[r][i] = tokenizer.unk_token
            enc = self._tokenize(words, tokenizer, max_length)
        # predict (no tags): every word scored with a placeholder label, as at evaluation
        tag_ids = [
            self._tag_ids(t) if labelled else [0] * len(w)
            for t, w in zip(all_tags, words, strict=True)
        ]
        out: dict[str, list] = {k: [] for k in ("input_ids", "labels", "word", "centrality", "row")}
        for w, r in enumerate(enc["overflow_to_sample_mapping"]):
            word_ids, offsets = enc.word_ids(w), enc["offset_mapping"][w]
            length = len(word_ids)
            labels, word_index, cent = [], [], []
            for pos, (wid, (start, _)) in enumerate(zip(word_ids, offsets, strict=True)):
                first = wid is not None and start == 0
                if wid is None:
                    labels.append(IGNORE)
                elif first:
                    labels.append(tag_ids[r][wid])
                elif self.label_all_tokens:
                    labels.append(self._label_to_id[_inside(self.labels[tag_ids[r][wid]])])
                else:
                    labels.append(IGNORE)
                word_index.append(wid if first else -1)
                cent.append(min(pos, length - 1 - pos))
            out["input_ids"].append(enc["input_ids"][w])
            out["labels"].append(labels)
            out["word"].append(word_index)
            out["centrality"].append(cent)
            out["row"].append(indices[r])
        if not labelled:
            del out["labels"]
        return out

    def _tokenize(self, words: list[list[str]], tokenizer: Any, max_length: int) -> Any:
        return tokenizer(
            words_as_in_text(words, tokenizer),
            is_split_into_words=True,
            truncation=True,
            max_length=max_length,
            stride=min(self.stride, max_length // 2),
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )

    def collate(self, features: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
        batch = pad_tokens(features, pad_id)
        if "labels" in features[0]:
            batch["labels"] = pad([f["labels"] for f in features], IGNORE)
        batch["word"] = pad([f["word"] for f in features], -1)
        batch["centrality"] = pad([f["centrality"] for f in features], 0)
        return batch

    # -- model ----------------------------------------------------------------------------------

    def build_head(self, hidden_size: int, pretrained: dict[str, torch.Tensor]) -> nn.Module:
        """Dropout and a linear layer; ModernBERT's prediction head before them."""
        layers = [nn.Dropout(self.dropout), nn.Linear(hidden_size, len(self.labels))]
        if self.head_style.token_transform:
            layers.insert(0, Transform(hidden_size, self.head_style))
        head = nn.Sequential(*layers)
        nn.init.normal_(head[-1].weight, std=0.02)
        nn.init.zeros_(head[-1].bias)
        return head

    def step(self, head: nn.Module, hidden: torch.Tensor, batch: Batch) -> StepOutput:
        logits = head(hidden).float()  # (B, T, C)
        labels = batch.get("labels")  # (B, T)
        loss = target = None
        scored = batch["word"] >= 0  # (B, T): first sub-token of each word
        if labels is not None:
            loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE)
            target = labels[scored]
        row = batch["row"][:, None].expand_as(scored)
        pred = logits.argmax(-1)
        packed = torch.stack([row, batch["word"], batch["centrality"], pred], -1)[scored]
        return StepOutput(loss, logits, packed, target)

    def metrics(self, split: str) -> MetricCollection:
        return MetricCollection({"entity": EntityF1(self.labels)})

    def figures(self) -> dict[str, Any]:
        return {"f1_per_type": EntityF1Chart(self.labels)}

    def prediction(self, out: StepOutput, batch: Batch) -> Prediction:
        return {"packed": out.preds}  # (words, 4): row, word, centrality, tag id

    def decode(self, preds: Prediction) -> dict[int, dict[str, Any]]:
        """Per row: word-level tags and entity spans (type, first word, last word). A long
        sentence's windows may come from different batches: the whole run is decoded at once."""
        words = _stitch(preds["packed"]).items()
        rows = {r: [self.labels[p] for p, _ in w] for r, w in words}
        return {r: {"tags": tags, "entities": entities(tags)} for r, tags in rows.items()}

    def hf_export(
        self, hf_encoder_config: dict, hf_encoder_state: dict[str, torch.Tensor], head: nn.Module
    ) -> tuple[dict, dict[str, torch.Tensor]]:
        config = {
            **hf_encoder_config,
            "architectures": ["BertForTokenClassification"],
            "id2label": dict(enumerate(self.labels)),
            "label2id": {t: i for i, t in enumerate(self.labels)},
            "classifier_dropout": self.dropout,
        }
        state = {f"bert.{k}": v for k, v in hf_encoder_state.items()}
        if isinstance(head[0], Transform):  # ModernBERT's name for its prediction head
            state |= {f"head.{k}": v for k, v in head[0].state_dict(keep_vars=True).items()}
        state["classifier.weight"] = head[-1].weight
        state["classifier.bias"] = head[-1].bias
        return config, state

    def synthetic_rows(self, n: int, seed: int) -> dict[str, list]:
        rng = random.Random(seed)
        names, places = ["alice", "bob", "carol"], ["paris", "oslo", "lima"]
        tokens, tags = [], []
        for _ in range(n):
            who, where = rng.choice(names), rng.choice(places)
            tokens.append([who, "flew", "to", where, "today"])
            tags.append(["B-PER", "O", "O", "B-LOC", "O"])
        return {self.tokens_column: tokens, self.tags_column: tags}

    def hf_predictions(self, export_dir: Path, rows: list[dict[str, Any]]) -> list:
        """The exported model's tag of each word's first token."""
        import transformers

        tok = transformers.AutoTokenizer.from_pretrained(export_dir)
        model = transformers.AutoModelForTokenClassification.from_pretrained(export_dir).eval()
        out = []
        for r in rows:
            enc = tok(words_as_in_text([r[self.tokens_column]], tokenizer=tok)[0],
                      is_split_into_words=True, return_tensors="pt")  # fmt: skip
            with torch.no_grad():
                tags = model(**enc).logits[0].argmax(-1).tolist()
            first: dict[int, str] = {}
            for pos, w in enumerate(enc.word_ids()):
                if w is not None and w not in first:
                    first[w] = model.config.id2label[tags[pos]]
            out.append([first[w] for w in sorted(first)])
        return out

    def record_value(self, record: dict[str, Any]) -> Any:
        return record["tags"]

    def text_line(self, row: dict[str, Any]) -> str | None:
        return " ".join(row[self.tokens_column])


def check_prefixes(tags: list[list[str]], column: str) -> None:
    """A ``UserError`` for a tag that is neither ``O`` nor ``P-TYPE`` with P one of the schemes'
    prefixes (B, I, E, S): ``PER`` would be read as prefix ``P`` and type ``R``."""
    for seq in tags:
        for tag in seq:
            if tag != "O" and (len(tag) < 3 or tag[0] not in "BIES" or tag[1] != "-"):
                raise UserError(
                    f"tag {tag!r} in column {column!r} is not O nor PREFIX-TYPE (B-PER, I-PER; "
                    "IOB1, IOB2 or BIOES): write each entity tag with its prefix"
                )


def _inside(tag: str) -> str:
    return f"I-{tag[2:]}" if tag.startswith("B-") else tag
