"""Preprocess: a WordPiece tokenizer trained on the training text (``model.train_tokenizer``).

BERT-compatible: ``[PAD]`` ``[UNK]`` ``[CLS]`` ``[SEP]`` ``[MASK]`` (ids 0-4), BERT's normaliser
(optional lowercasing) and pre-tokeniser, ``[CLS] A [SEP] B [SEP]`` with token types; saved as a
``transformers`` tokenizer directory that ``AutoTokenizer`` loads (and the export carries). A
vocabulary sized to the corpus and the compute makes a small model much cheaper: the embedding
table and the MLM decoder are ``vocab_size x hidden`` each. Training itself is the ``tokenizers``
library's (seconds for WikiText-2); only the BERT wiring is written here.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from framework.errors import UserError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def train_wordpiece(
    texts: Iterable[str], vocab_size: int, lowercase: bool, out_dir: Path, max_length: int = 512
) -> Any:
    """Train a WordPiece vocabulary of ``vocab_size`` on ``texts`` and save it to ``out_dir``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import WordPieceTrainer
    from transformers import BertTokenizerFast

    if vocab_size < 100:
        raise UserError(f"model.train_tokenizer={vocab_size}: use a vocabulary of >= 100 tokens")
    kept = [0]  # texts seen: ``texts`` is streamed (an iterator over a corpus of any size)

    def nonempty() -> Iterable[str]:
        for t in texts:
            if isinstance(t, str) and t.strip():
                kept[0] += 1
                yield t

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    trainer = WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS))
    tok.train_from_iterator(nonempty(), trainer)
    if not kept[0]:
        raise UserError("no training text to train a tokenizer on; check task.text_column")
    # The trainer numbers tokens of equal frequency in a varying order (parallel counting), so
    # two trainings on the same text give the same vocabulary under different ids. WordPiece
    # tokenises by the vocabulary alone (longest match first): the ids are re-assigned in a
    # fixed order (special tokens first, then the tokens sorted), so a run is reproducible.
    trained = tok.get_vocab()
    ordered = [*SPECIAL_TOKENS, *sorted(t for t in trained if t not in SPECIAL_TOKENS)]
    tok.model = models.WordPiece(
        vocab={t: i for i, t in enumerate(ordered)},
        unk_token="[UNK]",
        continuing_subword_prefix="##",
    )
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    tokenizer = BertTokenizerFast(
        tokenizer_object=tok,
        do_lower_case=lowercase,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_length,
    )
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")  # whole or not at all (a kill mid-save)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out_dir)
    return tokenizer


def run_tokenizer(cfg: DictConfig, datamodule) -> Path:
    """The run's own WordPiece tokenizer (``model.train_tokenizer``: its vocabulary size),
    trained on the train split's ``task.text_column`` once and kept in ``RUN_DIR/tokenizer`` (a
    resumed run, and every process of a job, reads the same one)."""
    from lightning.pytorch.utilities import rank_zero_only

    m = cfg.model
    if m.name_or_path or m.get("init_from"):
        raise UserError(
            "model.train_tokenizer trains a vocabulary for a model with random weights "
            "(model.preset); a pretrained model keeps its own: set model.train_tokenizer=null"
        )
    out = Path(cfg.paths.output_dir) / "tokenizer"
    if (out / "tokenizer.json").is_file():
        return out
    if rank_zero_only.rank != 0:  # launched together (torchrun, SLURM): wait for rank 0's
        for _ in range(3600):
            if (out / "tokenizer.json").is_file():
                return out
            time.sleep(1)
        raise UserError(f"no tokenizer appeared in {out} within an hour (process 0 trains it)")
    task = datamodule.task
    texts = (t for chunk in datamodule.raw_chunks("train") for t in task.tokenizer_texts(chunk))
    start = time.perf_counter()
    train_wordpiece(texts, int(m.train_tokenizer), bool(m.get("lowercase", True)), out)
    print(f"Trained a {m.train_tokenizer}-token WordPiece tokenizer in "
          f"{time.perf_counter() - start:.1f} s: {out}")  # fmt: skip
    return out


def words_as_in_text(words: list[list[str]], tokenizer: Any) -> list[list[str]]:
    """``words`` as the tokenizer sees them in running text. A byte-level BPE (RoBERTa,
    ModernBERT, GPT-2's) marks a word's leading space in its tokens (``Ġlives``) but drops it for
    pre-split words unless built with ``add_prefix_space`` (transformers' ``run_ner`` reloads
    RoBERTa's so; ModernBERT's generic tokenizer ignores the flag): there, every word but a row's
    first gets its space back. Probed once per call on two words, so WordPiece (no change) and
    prefix-space tokenizers keep their words as they are."""
    split = tokenizer(["a", "b"], is_split_into_words=True, add_special_tokens=False)
    if split["input_ids"] == tokenizer("a b", add_special_tokens=False)["input_ids"]:
        return words
    return [[w if i == 0 else f" {w}" for i, w in enumerate(row)] for row in words]
