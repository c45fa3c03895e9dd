"""Preprocess: a WordPiece tokenizer trained on a corpus (framework/tokenizer.py)."""

from __future__ import annotations

import torch
from transformers import AutoTokenizer

from framework.tokenizer import SPECIAL_TOKENS, train_wordpiece

CORPUS = [
    "The cat sat on the mat.",
    "A dog chased the cat across the garden.",
    "Cats and dogs are common pets in many homes.",
    "The garden was quiet after the rain.",
] * 25


def test_trained_tokenizer_is_bert_compatible_and_reloads(tmp_path):
    tok = train_wordpiece(CORPUS, vocab_size=150, lowercase=True, out_dir=tmp_path / "tok")
    assert len(tok) <= 150
    assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert (tok.pad_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id) == (0, 2, 3, 4)
    again = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert again.get_vocab() == tok.get_vocab()
    enc = again("The Cat sat", "on the mat")
    ids = enc["input_ids"]
    assert ids[0] == 2 and ids.count(3) == 2 and ids[-1] == 3  # [CLS] A [SEP] B [SEP]
    assert enc["token_type_ids"] == [0] * (ids.index(3) + 1) + [1] * (len(ids) - ids.index(3) - 1)
    # Round trip (lowercased): the words come back, an unseen word goes through word pieces.
    text = "the cat chased the dog across the mat."
    assert again.decode(again(text)["input_ids"], skip_special_tokens=True) == text
    assert again.unk_token_id not in again("cats gardens")["input_ids"]


def test_training_twice_gives_the_same_ids(tmp_path, monkeypatch):
    # Many words of equal frequency, counted in parallel: the trainer's own ids vary.
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")
    words = [f"w{i:04d}x" for i in range(3000)]
    corpus = [" ".join(words[i : i + 30]) for i in range(0, 3000, 30)] * 3
    a, b = (train_wordpiece(corpus, 8000, True, tmp_path / d).get_vocab() for d in "ab")
    assert a == b


def test_cased_tokenizer_keeps_case(tmp_path):
    tok = train_wordpiece(CORPUS, vocab_size=200, lowercase=False, out_dir=tmp_path / "tok")
    assert tok.decode(tok("The cat")["input_ids"], skip_special_tokens=True) == "The cat"


def test_the_export_carries_the_trained_tokenizer(tmp_path):
    from framework.encoder import Encoder
    from framework.export import export_hf
    from framework.module import TaskModule
    from framework.presets import preset
    from tasks.mlm import MaskedLM

    tok = train_wordpiece(CORPUS, vocab_size=150, lowercase=True, out_dir=tmp_path / "tok")
    task = MaskedLM()
    task.use_tokenizer(tok)
    torch.manual_seed(0)
    encoder = Encoder(preset("tiny", vocab_size=len(tok)))
    module = TaskModule(encoder, task, task.build_head(encoder.cfg.hidden_size, {}))
    out = export_hf(module, tok, tmp_path / "export")
    assert AutoTokenizer.from_pretrained(out).get_vocab() == tok.get_vocab()
    import transformers

    fill = transformers.pipeline("fill-mask", model=str(out), tokenizer=str(out))
    assert len(fill("the cat sat on the [MASK].", top_k=2)) == 2


def test_training_from_an_iterator_gives_the_vocabulary_of_a_list(tmp_path):
    texts = [f"the {w} sat on the mat number {i}" for i, w in enumerate(["cat", "dog"] * 40)]
    # a vocabulary that holds every token (ties at a smaller size are cut in a varying order)
    from_list = train_wordpiece(texts, 2000, True, tmp_path / "list")
    from_iter = train_wordpiece((t for t in texts), 2000, True, tmp_path / "iter")
    assert len(from_list.get_vocab()) < 2000
    assert from_iter.get_vocab() == from_list.get_vocab()
