"""Masked-language-model pretraining (BERT's objective), from scratch or continued.

Documents are tokenized once and packed into rows of ``data.max_length`` tokens; each piece of a
document is ``[CLS] ... [SEP]`` and attends only to itself (the encoder gets ``segment_ids``, a
block-diagonal attention mask, and positions that restart in every piece), so packing wastes no
slots on padding and lets no document see another.

Masking is dynamic: drawn anew for every training batch, on the batch's device, in the training
step (so it uses the RNG that checkpoints save). ``mlm_probability`` of the tokens (or of the
words, with ``whole_word``) are chosen; of those 80% become ``[MASK]``, 10% a random token and
10% stay. Special tokens are never chosen. Validation masks are fixed (seeded by the batch's
content), so validation perplexity is comparable between evaluations and runs.

The head (dense + GELU + LayerNorm, then a decoder tied to the input embeddings, or with
``tie_embeddings=false`` a matrix of its own) runs only at the chosen positions: no
vocabulary-sized logits for the other 85% of the tokens, which is most of the head's cost. The
encoder's last layer, too, computes only the chosen positions' outputs (``output_positions``):
every token is still a key and a value there. Metrics: masked-token accuracy, perplexity (exp of
the mean masked-token cross-entropy) and ``acc_most_frequent``, the accuracy of always predicting
the most frequent token (the unigram baseline). The export is a ``BertForMaskedLM``
(``pipeline("fill-mask")`` loads it).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from framework.errors import UserError
from framework.readers import CHUNK_ROWS, read_lines, then_blank
from framework.registry import register_task
from framework.task import Batch, Prediction, StepOutput, Task, pad
from tasks.mlm_head import _PRETRAINED_HEADS, MLMHead
from tasks.mlm_masking import choose_positions
from tasks.mlm_metrics import MaskedPerplexity, MostFrequentAccuracy, OutputSpread

TEXT_SUFFIXES = (".txt", ".raw", ".text")


@register_task("mlm")
class MaskedLM(Task):
    monitor = "val/perplexity"
    mode = "min"

    def __init__(
        self,
        text_column: str = "text",
        documents: str = "line",
        mlm_probability: float = 0.15,
        whole_word: bool = False,
        tie_embeddings: bool = True,
    ) -> None:
        if documents not in ("line", "blank"):
            raise UserError(f"task.documents={documents!r}: use line or blank")
        if not 0.0 < mlm_probability < 1.0:
            raise UserError(f"task.mlm_probability must be in (0, 1), got {mlm_probability}")
        self.text_column, self.documents = text_column, documents
        self.mlm_probability, self.whole_word = mlm_probability, whole_word
        self.tie_embeddings = tie_embeddings
        self.vocab_size: int | None = None
        self.mask_id = self.cls_id = self.sep_id = self.pad_id = None
        self._tokens: list[str] = []  # id -> token, for decoding predictions

    # -- data ------------------------------------------------------------------------------------

    file_format = "text"  # data.format=text; the default for these suffixes
    file_suffixes = TEXT_SUFFIXES
    packs_rows = True

    def read_chunks(self, path: Path) -> Iterator[dict[str, list]]:
        """Raw text: one document per line, or (``documents=blank``) per block of lines between
        empty lines; read incrementally, ``CHUNK_ROWS`` documents a chunk."""
        docs, block, any_doc = [], [], False
        lines = read_lines(path, newline_only=self.documents == "blank")
        for _, line in then_blank(lines):
            if self.documents == "line":
                if line.strip():
                    docs.append(line.strip())
            elif line:  # documents=blank: a block ends at an empty line
                if line.strip():
                    block.append(line.strip())
            elif block:
                docs.append(" ".join(block))
                block = []
            if len(docs) == CHUNK_ROWS:
                yield {self.text_column: docs}
                docs, any_doc = [], True
        if not docs and not any_doc:
            raise UserError(f"{path} has no text; every split needs at least one document")
        if docs:
            yield {self.text_column: docs}

    def use_tokenizer(self, tokenizer: Any) -> None:
        """Token ids the masking needs (called by the data module, and by ``encode``)."""
        missing = [
            n
            for n in ("mask_token_id", "cls_token_id", "sep_token_id")
            if getattr(tokenizer, n) is None
        ]
        if missing:
            raise UserError(
                f"the tokenizer has no {', '.join(missing)}; MLM needs a BERT-style one"
            )
        self.vocab_size = len(tokenizer)
        self.mask_id, self.cls_id = tokenizer.mask_token_id, tokenizer.cls_token_id
        self.sep_id, self.pad_id = tokenizer.sep_token_id, tokenizer.pad_token_id or 0
        if len(self._tokens) != self.vocab_size:
            self._tokens = tokenizer.convert_ids_to_tokens(list(range(self.vocab_size)))

    def text_row(self, text: str) -> dict[str, Any]:
        return {self.text_column: text}  # [MASK] tokens in it are filled in

    def tokenizer_texts(self, rows: dict[str, list]) -> list[str]:
        return [str(t) for t in rows[self.text_column]]

    def column_types(self, split: str) -> dict[str, str]:
        return {self.text_column: "text"}

    def check_columns(self, columns: list[str], split: str) -> None:
        if self.text_column not in columns:
            raise UserError(
                f"the {split} split has no column {self.text_column!r} (columns: {columns}); "
                "set task.text_column"
            )

    def encode(
        self, rows: dict[str, list], indices: list[int], tokenizer: Any, max_length: int
    ) -> dict[str, list]:
        """Documents -> packed rows of at most ``max_length`` tokens (several pieces per row)."""
        self.use_tokenizer(tokenizer)
        if max_length < 8:
            raise UserError(f"data.max_length={max_length} is too short for MLM; use >= 8")
        kept = [
            (r, t) for r, t in zip(indices, rows[self.text_column], strict=True) if t and t.strip()
        ]
        texts = [t for _, t in kept]
        # row: the row of the first piece; piece_rows/piece_starts/piece_lengths: each piece's
        # row, the offset of its first token in that row's document (to put predictions back in
        # place) and its length with [CLS] and [SEP]. Segment and position ids are derived from
        # the lengths in collate: per token, only the ids and the word starts are stored.
        out: dict[str, list] = {"input_ids": [], "word_starts": [], "row": [], "piece_rows": [],
                                "piece_starts": [], "piece_lengths": []}  # fmt: skip
        if not texts:
            return out
        enc = tokenizer(texts, add_special_tokens=False, return_attention_mask=False,
                        return_token_type_ids=False)  # fmt: skip
        row: dict[str, list] = {k: [] for k in out}

        def flush() -> None:
            if row["input_ids"]:
                row["row"] = row["piece_rows"][0]
                for k in out:
                    out[k].append(np.asarray(row[k], np.int8) if k == "word_starts" else row[k])
                    row[k] = []

        for i, ids in enumerate(enc["input_ids"]):
            words = np.asarray(enc.word_ids(i))  # no special tokens: a word id per token
            starts = np.ones(len(ids), dtype=np.int64)
            starts[1:] = words[1:] != words[:-1]
            starts = starts.tolist()
            pos = 0
            while pos < len(ids):
                room = max_length - len(row["input_ids"])
                if room < 3:  # [CLS] + one token + [SEP]
                    flush()
                    room = max_length
                take = min(len(ids) - pos, room - 2)
                row["input_ids"] += [self.cls_id, *ids[pos : pos + take], self.sep_id]
                row["word_starts"] += [1, 1, *starts[pos + 1 : pos + take], 1]
                row["piece_rows"].append(kept[i][0])
                row["piece_starts"].append(pos)
                row["piece_lengths"].append(take + 2)
                pos += take
        flush()
        return out

    def collate(self, features: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
        ids = [f["input_ids"] for f in features]
        segments, positions = [], []
        for f in features:  # each token's piece, and its position in the piece
            lengths = np.asarray(f["piece_lengths"])
            segment = np.repeat(np.arange(len(lengths)), lengths)
            segments.append(segment)
            positions.append(np.arange(len(segment)) - np.repeat(np.cumsum(lengths) - lengths,
                                                                 lengths))  # fmt: skip
        return {
            "input_ids": pad(ids, pad_id),
            "attention_mask": pad([[1] * len(s) for s in ids], 0),
            "segment_ids": pad(segments, -1),
            "position_ids": pad(positions, 0),
            "word_starts": pad([f["word_starts"] for f in features], 1),
            "row": torch.tensor([f["row"] for f in features], dtype=torch.long),
            "piece_rows": pad([f["piece_rows"] for f in features], -1),
            "piece_starts": pad([f["piece_starts"] for f in features], 0),
        }

    # -- masking ---------------------------------------------------------------------------------

    def prepare_batch(self, batch: Batch, stage: str) -> Batch:
        """Choose masked positions, replace them (80/10/10) and add ``labels`` (-100 elsewhere).
        Predict: the input's own [MASK] tokens are the positions to fill in."""
        if "labels" in batch:  # already prepared
            return batch
        ids = batch["input_ids"]
        if stage == "predict":
            fill = ids == self.mask_id
            chosen = fill.clone()
            chosen.view(-1)[0] |= not fill.any()  # one position, so the batch has an output
            labels = torch.where(chosen, 0, -100)  # placeholders: no gold in predict
            return {**batch, "labels": labels, "fill": fill}
        generator = None
        if stage != "train":  # fixed masks for evaluation, whatever the order of batches
            seed = int(ids[:, :16].sum().item()) * 1_000_003 + ids.numel()
            generator = torch.Generator(device=ids.device).manual_seed(seed)
        special = (self.cls_id, self.sep_id, self.pad_id)
        chosen = choose_positions(ids, batch["attention_mask"], special, self.mlm_probability,
                                  batch.get("word_starts") if self.whole_word else None,
                                  generator)  # fmt: skip
        labels = torch.where(chosen, ids, torch.full_like(ids, -100))
        u = torch.rand(ids.shape, device=ids.device, generator=generator)
        random_ids = torch.randint(
            self.vocab_size, ids.shape, device=ids.device, generator=generator
        )
        new = torch.where(chosen & (u < 0.8), torch.full_like(ids, self.mask_id), ids)
        new = torch.where(chosen & (u >= 0.8) & (u < 0.9), random_ids, new)
        return {**batch, "input_ids": new, "labels": labels}

    # -- model -----------------------------------------------------------------------------------

    def build_head(self, hidden_size: int, pretrained: dict[str, torch.Tensor]) -> nn.Module:
        if self.vocab_size is None:
            raise UserError("the MLM task has no tokenizer yet (encode or use_tokenizer first)")
        head = MLMHead(hidden_size, self.vocab_size, self.tie_embeddings, self.head_style)
        for dense, norm, bias, decoder in _PRETRAINED_HEADS:  # continued pretraining: keep it
            # all three: GTE's and RoBERTa's share lm_head.dense; ModernBERT's classifier head
            # (head.dense, head.norm) has no decoder bias
            if {f"{dense}.weight", f"{norm}.weight", bias} <= pretrained.keys():
                for mine, theirs in ((head.dense, dense), (head.norm, norm)):
                    mine.weight.data.copy_(pretrained[f"{theirs}.weight"])
                    if mine.bias is not None:  # ModernBERT's have none
                        mine.bias.data.copy_(pretrained[f"{theirs}.bias"])
                head.bias.data.copy_(pretrained[bias][: self.vocab_size])
                if head.decoder is not None and decoder in pretrained:  # an untied checkpoint
                    head.decoder.data.copy_(pretrained[decoder][: self.vocab_size])
                break
        return head

    def tie_weights(self, head: nn.Module, encoder: nn.Module) -> None:
        head.tie_to(encoder)

    def output_positions(self, batch: Batch) -> torch.Tensor:
        """The chosen positions: the encoder computes its last layer for these only."""
        return batch["labels"] != -100

    def step(
        self, head: nn.Module, hidden: torch.Tensor, batch: dict[str, torch.Tensor]
    ) -> StepOutput:
        labels = batch["labels"]  # (B, T), -100 where not predicted
        chosen = labels != -100
        if hidden.dim() == 3:  # (B, T, H): the full output, not only the chosen rows
            hidden = hidden[chosen]
        logits = head(hidden)  # (M, V): only the chosen positions
        target = labels[chosen]  # (M,)
        loss = F.cross_entropy(logits.float(), target) if "fill" not in batch else None
        preds = torch.full_like(labels, -100)
        preds[chosen] = logits.argmax(-1)
        return StepOutput(loss, logits, preds, labels, extras={"hidden": hidden})

    def update_metrics(self, metrics: MetricCollection, out: StepOutput, batch: Batch) -> None:
        """Logits and gold at the masked positions; the output spread also reads the hidden
        vectors there (keyword inputs reach only the metrics whose update takes them)."""
        target = out.target[out.target != -100]
        metrics.update(out.logits.detach(), target, hidden=out.extras["hidden"].detach())

    def metrics(self, split: str) -> MetricCollection:
        return MetricCollection({
            "acc": MulticlassAccuracy(self.vocab_size, average="micro"),
            "perplexity": MaskedPerplexity(),
            "acc_most_frequent": MostFrequentAccuracy(self.vocab_size),
            "output_spread": OutputSpread(),
        })  # fmt: skip

    def prediction(self, out: StepOutput, batch: Batch) -> Prediction:
        """(row, token offset in the row's document, predicted id) at each [MASK] of the input
        (or, outside predict, at each masked position)."""
        fill = batch["fill"] if "fill" in batch else out.preds != -100
        piece = batch["segment_ids"].clamp(min=0)  # (B, T)
        rows = torch.gather(batch["piece_rows"], 1, piece)
        offsets = torch.gather(batch["piece_starts"], 1, piece) + batch["position_ids"] - 1
        filled = torch.stack([rows, offsets, out.preds], -1)[fill]  # (M, 3)
        pieces = batch["piece_rows"][batch["piece_rows"] >= 0]  # every row, with or without masks
        marks = torch.stack([pieces, -torch.ones_like(pieces), -torch.ones_like(pieces)], -1)
        return {"packed": torch.cat([filled, marks])}

    def decode(self, preds: Prediction) -> dict[int, dict[str, Any]]:
        """Per row: the predicted token of each [MASK], in order."""
        by_row: dict[int, list[tuple[int, int]]] = {}
        for row, offset, token in preds["packed"].tolist():
            entries = by_row.setdefault(row, [])
            if token >= 0:  # -1: a row's marker (a row without [MASK] gets an empty list)
                entries.append((offset, token))
        return {r: {"filled": [self._tokens[t] for _, t in sorted(v)]} for r, v in by_row.items()}

    def hf_outputs(self, output: Any, batch: Batch) -> torch.Tensor:
        """``BertForMaskedLM``'s (B, T, V) logits at the positions this task predicts."""
        return output.logits[batch["labels"] != -100]

    def hf_export(
        self, hf_encoder_config: dict, hf_encoder_state: dict[str, torch.Tensor], head: nn.Module
    ) -> tuple[dict, dict[str, torch.Tensor]]:
        config = {**hf_encoder_config, "architectures": ["BertForMaskedLM"],
                  "tie_word_embeddings": head.decoder is None}  # fmt: skip
        state = {f"bert.{k}": v for k, v in hf_encoder_state.items()}
        p = "cls.predictions."
        for name, layer in (("dense", head.dense), ("LayerNorm", head.norm)):
            for param, value in layer.named_parameters():  # ModernBERT's: weights only
                state[f"{p}transform.{name}.{param}"] = value
        state[f"{p}bias"] = head.bias
        state[f"{p}decoder.weight"] = head.decoder_weight
        state[f"{p}decoder.bias"] = head.bias
        return config, state

    def synthetic_rows(self, n: int, seed: int) -> dict[str, list]:
        rng = random.Random(seed)
        words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far", "home"]
        # One random document, repeated: a masked word follows from its position. 30 one-token
        # words + [CLS] + [SEP] fill a 32-token row: one document per row, as transformers sees
        # them (it has no packed attention) in the export check.
        doc = " ".join(rng.choices(words, k=30))
        return {self.text_column: [doc] * n}

    def predict_rows(self, n: int, seed: int) -> dict[str, list]:
        """Texts with a [MASK] to fill in, of different lengths."""
        texts = ["the cat sat on the [MASK] .", "a dog [MASK] far", "[MASK] home"]
        return {self.text_column: texts}

    def hf_predictions(self, export_dir: Path, rows: list[dict[str, Any]]) -> list:
        import transformers

        fill = transformers.pipeline("fill-mask", model=str(export_dir), tokenizer=str(export_dir))
        return [[fill(r[self.text_column], top_k=1)[0]["token_str"]] for r in rows]

    def record_value(self, record: dict[str, Any]) -> Any:
        return record["filled"]

    def text_line(self, row: dict[str, Any]) -> str | None:
        return row[self.text_column]
