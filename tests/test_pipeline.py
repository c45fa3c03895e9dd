"""Pretrain -> fine-tune through the entry point (tiny encoder, a few batches)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from framework.build import build
from framework.pretrained import load_pretrained
from tests.conftest import FAST, compose, run_cli

TEXT = [
    "The river flows past the old mill and into the valley below.",
    "Researchers pretrain encoders on text from their own domain.",
    "A masked language model predicts hidden words from their context.",
    "Small models train quickly on a laptop processor.",
]


def _pretrain(tmp_path_factory, *overrides: str) -> Path:
    """A tiny masked-LM run on TEXT through the entry point; its run directory."""
    data = tmp_path_factory.mktemp("corpus")
    (data / "train.txt").write_text("\n".join(TEXT * 30) + "\n")
    (data / "valid.txt").write_text("\n".join(TEXT[::-1] * 5) + "\n")
    run_dir = tmp_path_factory.mktemp("pretrain")
    args = ("task=mlm", "data=wikitext2", f"data.path={data}", "data.train_file=train.txt",
            "data.val_file=valid.txt", "data.test_file=null", "data.max_length=64",
            *overrides, f"hydra.run.dir={run_dir}")  # fmt: skip
    proc = run_cli(*FAST, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory) -> Path:
    return _pretrain(tmp_path_factory, "validate_first=true")


def test_pretraining_run_writes_perplexity_curve_and_mlm_export(pretrained_run):
    m = json.loads((pretrained_run / "metrics.json").read_text())
    assert m["val/perplexity"] < m["val/perplexity_start"]  # it learned something
    assert 0.9 < m["packing_efficiency/train"] <= 1.0
    assert {"val/acc", "val/loss"} <= set(m)
    assert (pretrained_run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    cfg = json.loads((pretrained_run / "export" / "config.json").read_text())
    assert cfg["architectures"] == ["BertForMaskedLM"]


def test_fine_tune_from_a_pretraining_run(pretrained_run, tmp_path):
    cfg = compose(*FAST, f"model.init_from={pretrained_run}", f"paths.output_dir={tmp_path}")
    _, _, module = build(cfg)
    encoder, _ = load_pretrained(str(pretrained_run / "export"))
    ours, theirs = module.encoder.state_dict(), encoder.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)  # encoder carried over
    assert module.task.name == "classification"  # with a new head
    # the same through the entry point, from the run's last checkpoint file
    ckpt = pretrained_run / "checkpoints" / "last.ckpt"
    proc = run_cli(*FAST, f"model.init_from={ckpt}", f"hydra.run.dir={tmp_path / 'ft'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "val/acc" in json.loads((tmp_path / "ft" / "metrics.json").read_text())


def test_init_from_something_else_fails_in_one_line(tmp_path):
    proc = run_cli(*FAST, f"model.init_from={tmp_path}")
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith(
            f"error: model.init_from={tmp_path} is neither a run directory with export/ nor a .ckpt"
        )
    )


@pytest.fixture(scope="module")
def own_vocab_run(tmp_path_factory) -> Path:
    """Pretraining with a tokenizer trained on the corpus first (model.train_tokenizer)."""
    return _pretrain(tmp_path_factory, "model.train_tokenizer=160")


def test_pretraining_trains_its_own_tokenizer_and_exports_it(own_vocab_run):
    from transformers import AutoTokenizer

    trained = AutoTokenizer.from_pretrained(own_vocab_run / "tokenizer")
    assert len(trained) <= 160 and trained.mask_token_id == 4
    exported = AutoTokenizer.from_pretrained(own_vocab_run / "export")
    assert exported.get_vocab() == trained.get_vocab()
    cfg = json.loads((own_vocab_run / "export" / "config.json").read_text())
    assert cfg["vocab_size"] == len(trained)  # embeddings sized to the trained vocabulary
    m = json.loads((own_vocab_run / "metrics.json").read_text())
    assert 0.0 < m["val/output_spread"] <= 1.0


def test_from_scratch_takes_the_architecture_and_tokenizer_not_the_weights(own_vocab_run, tmp_path):
    pretrained, _ = load_pretrained(str(own_vocab_run / "export"))
    arms = {}
    for scratch in (False, True):
        cfg = compose(*FAST, f"model.init_from={own_vocab_run}", f"model.from_scratch={scratch}",
                      f"paths.output_dir={tmp_path / str(scratch)}")  # fmt: skip
        tokenizer, _, module = build(cfg)
        assert len(tokenizer) == pretrained.cfg.vocab_size  # the run's own tokenizer
        assert module.encoder.cfg == pretrained.cfg  # the same architecture
        arms[scratch] = module.encoder.state_dict()
    ref = pretrained.state_dict()
    assert all(torch.equal(arms[False][k], ref[k]) for k in ref)
    assert not torch.equal(arms[True]["embeddings.word_embeddings.weight"],
                           ref["embeddings.word_embeddings.weight"])  # fmt: skip
