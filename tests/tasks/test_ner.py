"""NER: entity rules vs seqeval, the metric under 2 processes, alignment and window stitching."""

from __future__ import annotations

import os
import random
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

from framework.errors import UserError
from tasks.entities import EntityF1, detect_scheme, entities, entity_scores, to_iob2
from tasks.ner import NER

CONLL = Path(__file__).resolve().parents[3] / "shared" / "data" / "conll2003"
TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "E-LOC", "S-PER", "I-MISC", "B-MISC"]


def _random_sequences(seed: int, n: int = 300) -> list[list[str]]:
    rng = random.Random(seed)
    return [[rng.choice(TAGS) for _ in range(rng.randint(0, 12))] for _ in range(n)]


def _seqeval(gold, pred) -> dict[str, float]:
    out = {
        "precision": precision_score(gold, pred),
        "recall": recall_score(gold, pred),
        "f1": f1_score(gold, pred),
    }
    report = classification_report(gold, pred, output_dict=True, zero_division=0)
    out.update({f"f1_{k}": v["f1-score"] for k, v in report.items() if "avg" not in k})
    return out


@pytest.mark.parametrize("seed", range(5))
def test_matches_seqeval_on_random_ill_formed_sequences(seed):
    gold = _random_sequences(seed)
    rng = random.Random(seed + 100)
    pred = [[t if rng.random() < 0.5 else rng.choice(TAGS) for t in seq] for seq in gold]
    ours, theirs = entity_scores(gold, pred), _seqeval(gold, pred)
    assert set(ours) == set(theirs)
    for k, v in theirs.items():
        assert ours[k] == pytest.approx(v, abs=1e-12), k


@pytest.mark.skipif(not CONLL.is_dir(), reason="needs ../shared/data/conll2003")
def test_matches_seqeval_on_real_conll_tags():
    rows = NER().read_file(CONLL / "valid.txt")
    gold = rows["tags"]
    rng = random.Random(0)
    # corrupt 10% of the tags, as a model would
    pred = [[t if rng.random() > 0.1 else rng.choice(TAGS[:5]) for t in seq] for seq in gold]
    ours, theirs = entity_scores(gold, pred), _seqeval(gold, pred)
    for k, v in theirs.items():
        assert ours[k] == pytest.approx(v, abs=1e-12), k
    assert len(gold) == 3250


def test_schemes_are_detected_and_normalised():
    iob1 = ["I-PER", "I-PER", "B-PER", "O", "I-LOC"]
    assert detect_scheme([iob1]) == "IOB1"
    assert to_iob2(iob1) == ["B-PER", "I-PER", "B-PER", "O", "B-LOC"]
    bioes = ["B-LOC", "E-LOC", "S-PER", "O"]
    assert detect_scheme([bioes]) == "BIOES"
    assert to_iob2(bioes) == ["B-LOC", "I-LOC", "B-PER", "O"]
    assert detect_scheme([["B-PER", "I-PER", "O"]]) == "IOB2"
    assert entities(["O", "I-MISC", "I-MISC", "B-PER"]) == [("MISC", 1, 2), ("PER", 3, 3)]


def _features(task: NER, tokenizer, rows, max_length: int):
    task.setup([rows])
    cols = task.encode(rows, list(range(len(rows["tokens"]))), tokenizer, max_length)
    return [dict(zip(cols, v, strict=True)) for v in zip(*cols.values(), strict=True)]


def test_first_subtoken_carries_the_label_and_all_tokens_option(tokenizer):
    rows = {
        "tokens": [["Schwarzenegger", "visited", "Ouagadougou"]],
        "tags": [["B-PER", "O", "B-LOC"]],
    }
    task = NER()
    (f,) = _features(task, tokenizer, rows, 64)
    pieces = tokenizer.convert_ids_to_tokens(f["input_ids"])
    assert len(pieces) > 5  # both names split into several sub-tokens
    labelled = [(p, task.labels[y]) for p, y in zip(pieces, f["labels"], strict=True) if y >= 0]
    assert labelled == [("schwarz", "B-PER"), ("visited", "O"), ("ou", "B-LOC")]
    assert [w for w in f["word"] if w >= 0] == [0, 1, 2]
    every = NER(label_all_tokens=True)
    (g,) = _features(every, tokenizer, rows, 64)
    tags = [every.labels[y] for y in g["labels"] if y >= 0]
    # schwarz ##ene ##gger visited ou ##aga ##dou ##go ##u
    assert tags == ["B-PER", "I-PER", "I-PER", "O", "B-LOC", *["I-LOC"] * 4]
    assert [w for w in g["word"] if w >= 0] == [0, 1, 2]  # still scored on first pieces only


def test_byte_level_bpe_words_tokenize_as_in_running_text(tmp_path, tokenizer):
    """A byte-level BPE (RoBERTa, ModernBERT) gives pre-split words the tokens of running text
    (``Ġlives``, not ``liv es``): the encoder sees what it was pretrained on; each word's first
    token still carries its tag. WordPiece words are left as they are."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    bpe.train_from_iterator(
        ["the cat sat on the mat", "John lives in Paris and Oslo"] * 50, trainer
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>")
    rows = {"tokens": [["John", "lives", "in", "Paris"]], "tags": [["B-PER", "O", "O", "B-LOC"]]}
    task = NER()
    (f,) = _features(task, tok, rows, 64)
    assert f["input_ids"] == tok("John lives in Paris")["input_ids"]
    pieces = tok.convert_ids_to_tokens(f["input_ids"])
    labelled = [(p, task.labels[y]) for p, y in zip(pieces, f["labels"], strict=True) if y >= 0]
    assert labelled == [("John", "B-PER"), ("Ġlives", "O"), ("Ġin", "O"), ("ĠParis", "B-LOC")]
    (g,) = _features(NER(), tokenizer, rows, 64)  # WordPiece: the words as they are
    assert g["input_ids"] == tokenizer(rows["tokens"][0], is_split_into_words=True)["input_ids"]


def test_long_sentence_is_windowed_and_stitched_back(tokenizer):
    words = [f"Hohenzollern{i}" for i in range(40)]  # each word: several sub-tokens
    tags = ["B-PER" if i % 5 == 0 else "O" for i in range(40)]
    rows = {"tokens": [words], "tags": [tags]}
    task = NER(stride=8)
    feats = _features(task, tokenizer, rows, 32)
    assert len(feats) > 3  # split into overlapping windows
    covered = {w for f in feats for w in f["word"] if w >= 0}
    assert covered == set(range(40))  # no word dropped
    # stitching: gold labels as predictions give a perfect score and the original sequence
    batch = task.collate(feats, tokenizer.pad_token_id)
    scored = batch["word"] >= 0
    packed = torch.stack(
        [
            batch["row"][:, None].expand_as(scored),
            batch["word"],
            batch["centrality"],
            batch["labels"],
        ],
        -1,
    )[scored]
    metric = EntityF1(task.labels)
    metric.update(packed, batch["labels"][scored])
    assert metric.compute()["f1"].item() == 1.0
    (decoded,) = task.decode({"packed": packed}).values()
    assert decoded["tags"] == tags
    assert decoded["entities"][:2] == [("PER", 0, 0), ("PER", 5, 5)]


def test_predictions_are_whole_sentences_whatever_the_batching(tokenizer, tiny_encoder):
    import lightning as L
    from torch.utils.data import DataLoader

    from framework.module import TaskModule

    words = [f"Hohenzollern{i}" for i in range(40)]
    rows = {
        "tokens": [words, ["Peter", "said"]],
        "tags": [["B-PER" if i % 5 == 0 else "O" for i in range(40)], ["B-PER", "O"]],
    }
    task = NER(stride=8)
    feats = _features(task, tokenizer, rows, 32)
    assert len(feats) > 4  # the long sentence: several windows
    torch.manual_seed(0)
    module = TaskModule(tiny_encoder, task, task.build_head(64, {}))
    decoded = {}
    for batch_size in (1, len(feats)):  # windows of one sentence in different batches, or one
        loader = DataLoader(
            feats, batch_size=batch_size, collate_fn=partial(task.collate, pad_id=0)
        )
        trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                            enable_model_summary=False)  # fmt: skip
        decoded[batch_size] = module.decode_predictions(trainer.predict(module, loader))
    assert decoded[1] == decoded[len(feats)]
    assert sorted(decoded[1]) == [0, 1]
    assert [len(decoded[1][r]["tags"]) for r in (0, 1)] == [40, 2]


def _ddp_worker(rank: int, world: int, port: str, preds, target, out, idle_rank=None):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    metric = EntityF1(["O", "B-PER", "I-PER", "B-LOC", "I-LOC"])
    if idle_rank is None:
        metric.update(preds[rank::world], target[rank::world])
    elif rank != idle_rank:  # every batch here; the idle process saw none
        metric.update(preds, target)
    value = {k: v.item() for k, v in metric.compute().items()}
    out[rank] = value
    dist.destroy_process_group()


@pytest.mark.parametrize("idle_rank", [None, 1])
def test_two_process_metric_equals_one_process(idle_rank):
    g = torch.Generator().manual_seed(0)
    n = 400
    rows = torch.randint(0, 40, (n,), generator=g)
    words = torch.randint(0, 10, (n,), generator=g)
    cent = torch.randint(0, 5, (n,), generator=g)
    pred = torch.randint(0, 5, (n,), generator=g)
    target = (rows * 7 + words) % 5  # a word's gold tag is the same in every copy of it
    preds = torch.stack([rows, words, cent, pred], -1)
    single = EntityF1(["O", "B-PER", "I-PER", "B-LOC", "I-LOC"])
    single.update(preds, target)
    expected = {k: v.item() for k, v in single.compute().items()}
    with mp.Manager() as manager:
        out = manager.dict()
        args = (2, "29533", preds, target, out, idle_rank)
        mp.spawn(_ddp_worker, args=args, nprocs=2, join=True)  # an idle process once aborted
        got = dict(out)
    assert got[0] == got[1] == pytest.approx(expected, abs=1e-7)


def test_bad_conll_input(tmp_path, tokenizer):
    bad = tmp_path / "train.txt"
    bad.write_text("EU B-ORG\nrejects O\nGerman\n")
    with pytest.raises(UserError, match=r"train\.txt:3: 1 columns where the file has 2"):
        NER().read_file(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("-DOCSTART- -X- O O\n\n")
    with pytest.raises(UserError, match="has no sentences"):
        NER().read_file(empty)
    task = NER()
    task.setup([{"tokens": [["a"]], "tags": [["B-PER"]]}])
    with pytest.raises(UserError, match="tag 'B-LOC' is not in the label set"):
        task.encode({"tokens": [["x"]], "tags": [["B-LOC"]]}, [0], tokenizer, 16)
    lenient = NER(unknown_tag="O")
    lenient.setup([{"tokens": [["a"]], "tags": [["B-PER"]]}])
    out = lenient.encode({"tokens": [["x"]], "tags": [["B-LOC"]]}, [0], tokenizer, 16)
    assert [y for y in out["labels"][0] if y >= 0] == [0]  # mapped to O


def test_word_without_subtokens_is_kept_as_unk(tokenizer):
    assert tokenizer.tokenize("\x07") == []  # the BERT normaliser drops control characters
    rows = {"tokens": [["Paris", "\x07", "rocks"]], "tags": [["B-LOC", "O", "O"]]}
    task = NER()
    (f,) = _features(task, tokenizer, rows, 16)
    assert [w for w in f["word"] if w >= 0] == [0, 1, 2]
    assert tokenizer.unk_token_id in f["input_ids"]
