"""Bad input through the entry point: one ``error:`` line that names the problem and the fix, a
non-zero exit, no traceback and no checkpoint.

Each row of ``CASES`` is one input a user can get wrong. They run through ``framework.train.main``
in this process (the same code path as the command, without paying for a Python start per row);
one case also runs as a real process, for the exit status and stderr of the command itself.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import FAST, run_cli

GOOD = "text,label\ngood film,positive\nbad film,negative\nfine,positive\n"
CONLL = "EU B-ORG\nrejects O\nGerman B-MISC\ncall O\n\nPeter B-PER\nBlackburn I-PER\n"
CONLL_DEV = "Peter B-PER\nsaid O\n"


def _jsonl(*rows: dict) -> str:
    return "\n".join(json.dumps(r) for r in rows) + "\n"


NER = ("task=ner", "data.train_file=train.txt", "data.val_file=dev.txt")
NER_FILES = {"train.txt": CONLL, "dev.txt": CONLL_DEV}
NER_JSON = ("task=ner", "data.train_file=train.jsonl", "data.val_file=dev.jsonl")
GOOD_NER_JSON = _jsonl({"tokens": ["Peter", "said"], "tags": ["B-PER", "O"]})

# name: (files in data.path (besides train.csv/dev.csv = GOOD), overrides, text of the error).
# In overrides, {data} is the data folder and {tmp} the test's temporary folder.
CASES: dict[str, tuple[dict[str, str], tuple[str, ...], str]] = {
    # -- data files --------------------------------------------------------------------------
    "data.path is not a folder": ({}, ("data.path={tmp}/nowhere",), "is not a directory"),
    "train file missing": ({}, ("data.train_file=nope.csv",), "nope.csv does not exist"),
    "file not UTF-8": (
        {"train.csv": "text,label\ncaf\xe9,positive\n"},
        (),
        "is not UTF-8 (bad byte at line 2)",
    ),
    "ragged CSV row": ({"train.csv": GOOD + "one,two,three\n"}, (), "3 fields where the header"),
    "header only": ({"train.csv": "text,label\n"}, (), "has no rows"),
    "malformed JSON line": (
        {"train.jsonl": '{"text": "good", "label": "pos"}\n{"text": oops}\n'},
        ("data.train_file=train.jsonl",),
        "train.jsonl:2: not a JSON object",
    ),
    "text column missing": ({}, ("task.text_column=sentence",), "column 'sentence' not found"),
    "unknown suffix": (
        {"train.xlsx": GOOD},
        ("data.train_file=train.xlsx",),
        "set data.format to one of: csv, tsv, jsonl, parquet",
    ),
    "damaged Parquet file": (
        {"train.parquet": "PAR1 cut short"},
        ("data.train_file=train.parquet",),
        "train.parquet is not a readable Parquet file",
    ),
    "unknown data.format": ({}, ("data.format=xml",), "data.format='xml' is not one of"),
    "data.max_train_samples=0": ({}, ("data.max_train_samples=0",), "empty after"),
    # -- labels --------------------------------------------------------------------------------
    "empty label value": ({"train.csv": GOOD + "no label here,\n"}, (), "have no value in column"),
    "null label value (JSON)": (
        {"train.jsonl": _jsonl({"text": "a", "label": "pos"}, {"text": "b", "label": None})},
        ("data.train_file=train.jsonl",),
        "have no value in column 'label'",
    ),
    "NaN label value (JSON)": (
        {"train.jsonl": '{"text": "a", "label": "pos"}\n{"text": "b", "label": NaN}\n'},
        ("data.train_file=train.jsonl",),
        "train.jsonl:2: NaN is not a JSON value",
    ),
    "JSON column mixing numbers and strings": (
        {"train.jsonl": _jsonl({"text": "a", "label": "pos"}, {"text": "b", "label": 1})},
        ("data.train_file=train.jsonl",),
        "column 'label' mixes value types",
    ),
    "JSON list where a text is read": (
        {
            "train.jsonl": _jsonl(
                {"text": ["good", "film"], "label": "positive"},
                {"text": ["bad"], "label": "negative"},
            )
        },
        ("data.train_file=train.jsonl",),
        "train.jsonl: column 'text' holds list<item: string> values where task 'classification' "
        "reads one text or number per row",
    ),
    "JSON text where NER reads a word list": (
        {
            "train.jsonl": _jsonl({"tokens": "Peter said", "tags": ["B-PER", "O"]}),
            "dev.jsonl": GOOD_NER_JSON,
        },
        NER_JSON,
        "train.jsonl: column 'tokens' holds string values where task 'ner' reads a list of texts",
    ),
    "duplicated task.labels": (
        {},
        ("task.labels=[negative,positive,negative]",),
        "task.labels lists 'negative' more than once",
    ),
    "dev label outside the train labels": (
        {"dev.csv": GOOD + "meh,neutral\n"},
        (),
        "label 'neutral' is not in the label set",
    ),
    "one label only": (
        {"train.csv": "text,label\na,pos\nb,pos\n"},
        (),
        "needs at least 2 labels",
    ),
    # -- NER data ------------------------------------------------------------------------------
    "NER tokens and tags of different lengths (JSON)": (
        {
            "train.jsonl": _jsonl({"tokens": ["EU", "rejects"], "tags": ["B-ORG"]}),
            "dev.jsonl": GOOD_NER_JSON,
        },
        NER_JSON,
        "2 tokens but 1 tags",
    ),
    "NER task.tag_field beyond the columns": (
        NER_FILES,
        (*NER, "task.tag_field=3"),
        "task.tag_field=3 is not a column",
    ),
    "NER CoNLL file with a suffix the reader does not know": (
        {"train.annotated": CONLL, "dev.txt": CONLL_DEV},
        ("task=ner", "data.train_file=train.annotated", "data.val_file=dev.txt"),
        "set data.format to one of: conll, csv, tsv, jsonl",
    ),
    "NER CoNLL lines with different column counts": (
        {"train.txt": "EU NNP B-ORG\nrejects O\n", "dev.txt": CONLL_DEV},
        NER,
        "2 columns where the file has 3",
    ),
    "NER dev tag outside the label set": (
        {"train.txt": CONLL, "dev.txt": "Paris B-LOC\n"},
        NER,
        "tag 'B-LOC' is not in the label set",
    ),
    "NER unknown task.scheme": (NER_FILES, (*NER, "task.scheme=BILOU"), "task.scheme must be"),
    # -- data options --------------------------------------------------------------------------
    "data.max_length=0": ({}, ("data.max_length=0",), "data.max_length must be >= 2"),
    "data.max_length beyond the positions": (
        {},
        ("data.max_length=100000",),
        "exceeds the model's 512 positions",
    ),
    "data.batch_size=0": ({}, ("data.batch_size=0",), "data.batch_size must be >= 1"),
    "data.eval_batch_size=-1": ({}, ("data.eval_batch_size=-1",), "data.eval_batch_size must be"),
    "data.max_tokens below data.max_length": (
        {},
        ("data.max_tokens=8",),
        "data.max_tokens=8 is below data.max_length",
    ),
    "data.num_workers=-1": ({}, ("data.num_workers=-1",), "data.num_workers must be >= 0"),
    # -- model and tokenizer ---------------------------------------------------------------
    "unknown model.attn_impl": ({}, ("model.attn_impl=flash9",), "model.attn_impl must be sdpa"),
    "unknown model.preset": ({}, ("model.preset=huge",), "model.preset"),
    "attention dropout out of range": (
        {},
        ("model.attention_dropout=1.5",),
        "model.attention_dropout must be in [0, 1)",
    ),
    "model.tokenizer missing": (
        {},
        ("model.tokenizer={tmp}/no_tokenizer",),
        "cannot load a tokenizer from",
    ),
    "tokenizer larger than the embeddings": (
        {},
        ("model=minilm", "model.tokenizer={tmp}/big_tokenizer"),
        "the model's embeddings have 30522 rows",
    ),
    "model.init_from missing": (
        {},
        ("model.init_from={tmp}/no_run",),
        "is neither a run directory",
    ),
    # -- the other tasks ---------------------------------------------------------------------
    "regression target not a number": (
        {"train.csv": "text,label\ngood,4.5\nbad,high\n", "dev.csv": "text,label\nok,2\n"},
        ("task=regression",),
        "'label' is 'high', not a finite number",
    ),
    "multilabel row without labels": (
        {
            "train.jsonl": _jsonl({"text": "a", "labels": ["x"]}, {"text": "b", "labels": None}),
            "dev.jsonl": _jsonl({"text": "a", "labels": ["x", "y"]}),
        },
        ("task=multilabel", "data.train_file=train.jsonl", "data.val_file=dev.jsonl"),
        "row 2 has no value in column 'labels'",
    ),
    "multiple choice with uneven candidates": (
        {
            "train.jsonl": _jsonl(
                {"question": "q", "choices": ["a", "b"], "label": 0},
                {"question": "q", "choices": ["a", "b", "c"], "label": 1},
            )
        },
        ("task=multiple_choice", "data.train_file=train.jsonl", "data.val_file=train.jsonl"),
        "rows have [2, 3] candidates",
    ),
    "multiple choice answer naming no candidate": (
        {"train.jsonl": _jsonl({"question": "q", "choices": ["a", "b"], "label": "C"})},
        ("task=multiple_choice", "data.train_file=train.jsonl", "data.val_file=train.jsonl"),
        "answer 'C' is neither a candidate's 'label'",
    ),
    "QA question without an answer (v1)": (
        {"train.jsonl": _jsonl({"question": "who?", "context": "Ann ran.", "answers": []})},
        ("task=qa", "data.train_file=train.jsonl", "data.val_file=train.jsonl"),
        "set task.unanswerable=true",
    ),
    "QA file that is not SQuAD JSON": (
        {"train.json": '{"version": "1.1"}'},
        ("task=qa", "data.train_file=train.json", "data.val_file=train.json"),
        "is not SQuAD JSON",
    ),
    "header-less TSV with too few columns named": (
        {"train.tsv": "good film\tpositive\textra\n"},
        ("data.train_file=train.tsv", "data.columns=[text,label]"),
        "3 fields where data.columns names 2",
    ),
    # -- optimisation and trainer ----------------------------------------------------------
    "negative optim.lr": ({}, ("optim.lr=-0.1",), "optim.lr must be > 0"),
    "optim.warmup_ratio above 1": ({}, ("optim.warmup_ratio=1.5",), "optim.warmup_ratio must"),
    "trainer=gpu without a GPU": (
        {},
        ("trainer=gpu", "trainer.accelerator=gpu"),  # FAST sets cpu
        "no CUDA GPU is visible",
    ),
    "unknown trainer.precision": ({}, ("trainer.precision=17",), "Precision 17 is invalid"),
    # -- command line --------------------------------------------------------------------------
    "unknown config group option": ({}, ("model=bert_huge",), "unknown model 'bert_huge'"),
    "unknown config key": ({}, ("optim.lrr=1",), "unknown config key 'optim.lrr'"),
    "unknown task option": ({}, ("+task.colour=red",), "task 'classification' has no option"),
    # -- config values (types, added keys, monitor, mode, stopping) -------------------------
    "data.batch_size=abc": (
        {},
        ("data.batch_size=abc",),
        "data.batch_size='abc' is not an integer",
    ),
    "data.batch_size=3.5": ({}, ("data.batch_size=3.5",), "data.batch_size=3.5 is not an integer"),
    "optim.lr=abc": ({}, ("optim.lr=abc",), "optim.lr='abc' is not a number (e.g. optim.lr=5e-05)"),
    "data.max_length=abc": (
        {},
        ("data.max_length=abc",),
        "data.max_length='abc' is not an integer",
    ),
    "seed=abc": ({}, ("seed=abc",), "seed='abc' is not an integer (e.g. seed=0)"),
    "optim.betas with a word": ({}, ("optim.betas=[0.9,x]",), "is not a list of numbers"),
    "trainer.val_check_interval=nonsense": (
        {},
        ("trainer.val_check_interval=nonsense",),
        "Invalid time format for `val_check_interval`",
    ),
    "+data.typo=1": ({}, ("+data.typo=1",), "unknown config key 'data.typo'; 'data' has: path"),
    "+optim.typo=1": ({}, ("+optim.lrr=1",), "unknown config key 'optim.lrr'"),
    "task.monitor typo": (
        {},
        ("task.monitor=val/acc2",),
        "task.monitor='val/acc2' is not a metric this task logs; choose one of: val/acc",
    ),
    "task.monitor typo (sanity check)": (
        {},
        ("task.monitor=val/f2", "trainer.num_sanity_val_steps=1"),
        "Did you mean 'val/f1'?",
    ),
    "task.mode typo": ({}, ("task.mode=maxx",), "task.mode='maxx': use max"),
    "unknown logger": ({}, ("logger=foo",), "unknown logger 'foo'; choose one of: csv"),
    "trainer.max_epochs=-1 without a limit": (
        {},
        ("trainer.max_epochs=-1",),
        "trains until stopped by hand: also set trainer.max_steps=N",
    ),
    # -- data that trained silently wrong ------------------------------------------------------
    "NUL byte": ({"train.csv": GOOD + "bro\x00ken,positive\n"}, (), "train.csv:5: a NUL byte"),
    "labels differing by case or spaces": (
        {"train.csv": "text,label\ngood,Pos\nbad,pos \nfine,neg\n"},
        (),
        "labels 'Pos' and 'pos ' in column 'label' differ only by case or surrounding spaces",
    ),
    "NER tags without a B-/I- prefix": (
        {
            "train.jsonl": _jsonl({"tokens": ["Peter", "said"], "tags": ["PER", "O"]}),
            "dev.jsonl": GOOD_NER_JSON,
        },
        NER_JSON,
        "tag 'PER' in column 'tags' is not O nor PREFIX-TYPE",
    ),
    "NER training data that is all O": (
        {
            "train.jsonl": _jsonl({"tokens": ["Peter", "said"], "tags": ["O", "O"]}),
            "dev.jsonl": _jsonl({"tokens": ["it", "rains"], "tags": ["O", "O"]}),
        },
        NER_JSON,
        "every tag of the train split is O",
    ),
    "QA answer not at its answer_start": (
        {
            "train.jsonl": _jsonl(
                {
                    "question": "who?",
                    "context": "Ann ran home.",
                    "answers": [{"text": "Ann", "answer_start": 4}],
                }
            )
        },
        ("task=qa", "data.train_file=train.jsonl", "data.val_file=train.jsonl"),
        "row 1: the answer 'Ann' is not at answer_start=4 of its context (there: 'ran')",
    ),
    "a model folder without tokenizer files": (
        {},
        (
            "model.name_or_path={tmp}/model_without_tokenizer",
            "model.preset=null",
            "model.tokenizer=null",
        ),
        "has 5 tokens: the folder holds no tokenizer files",
    ),
    "a config with fewer layers than its weights": (
        {},
        ("model.name_or_path={tmp}/fewer_layers", "model.preset=null"),
        "the weights hold encoder.layer.4.attention.output.LayerNorm.bias (and 31 more",
    ),
    "a config.json whose heads do not divide the hidden size": (
        {},
        ("model.name_or_path={tmp}/five_heads", "model.preset=null"),
        "is not valid: hidden_size (384) must be divisible by num_heads (5)",
    ),
    "a config.json without hidden_size": (
        {},
        ("model.name_or_path={tmp}/no_hidden_size", "model.preset=null"),
        "has no 'hidden_size'; fix it",
    ),
    # -- checkpoints and resume ------------------------------------------------------------
    "resume=yes": ({}, ("resume=yes",), "use resume=auto"),
    "ckpt_path missing": ({}, ("ckpt_path={tmp}/none.ckpt",), "none.ckpt does not exist"),
    "ckpt_path truncated": (
        {},
        ("ckpt_path={tmp}/truncated.ckpt",),
        "is not a complete training checkpoint",
    ),
    "resume=auto and ckpt_path together": (
        {},
        ("resume=auto", "ckpt_path={tmp}/truncated.ckpt"),
        "not both",
    ),
    "ckpt_path of another task": (
        {},
        ("ckpt_path={tmp}/ner.ckpt",),
        "was written for another task or model",
    ),
}


def run_main(*args: str) -> tuple[int, str]:
    """(exit status, stderr) of ``python -m framework.train ARGS``, run in this process."""
    from framework.train import main

    err = io.StringIO()
    argv, sys.argv = sys.argv, ["framework.train", *args]
    code = 0
    try:
        with contextlib.redirect_stderr(err):
            main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = argv
    return code, err.getvalue()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Files some cases point at: a truncated checkpoint, a real NER one, a big tokenizer."""
    from transformers import AutoTokenizer

    tmp = tmp_path_factory.mktemp("inputs")
    (tmp / "truncated.ckpt").write_bytes(b"PK\x03\x04 cut short")
    data = tmp / "ner_data"
    data.mkdir()
    for name, text in NER_FILES.items():
        (data / name).write_text(text)
    run = tmp / "ner_run"
    code, err = run_main(*FAST, *NER, f"data.path={data}", f"hydra.run.dir={run}")
    assert code == 0, err[-3000:]
    (run / "checkpoints" / "last.ckpt").rename(tmp / "ner.ckpt")
    from framework.config import _packaged_minilm

    big = AutoTokenizer.from_pretrained(_packaged_minilm())
    big.add_tokens(["tasklightword1", "tasklightword2"])
    big.save_pretrained(tmp / "big_tokenizer")
    minilm = Path(_packaged_minilm())
    for name, layers in (
        ("model_without_tokenizer", 6),
        ("fewer_layers", 4),
    ):  # MiniLM has 6 layers
        folder = tmp / name
        folder.mkdir()
        config = json.loads((minilm / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": layers}))
        (folder / "model.safetensors").symlink_to(minilm / "model.safetensors")
        if name == "fewer_layers":
            AutoTokenizer.from_pretrained(minilm).save_pretrained(folder)
    config = json.loads((minilm / "config.json").read_text())
    for name, broken in (
        ("five_heads", {**config, "num_attention_heads": 5}),
        ("no_hidden_size", {k: v for k, v in config.items() if k != "hidden_size"}),
    ):
        (tmp / name).mkdir()
        (tmp / name / "config.json").write_text(json.dumps(broken))
        (tmp / name / "model.safetensors").symlink_to(minilm / "model.safetensors")
    return tmp


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_error_line(case, inputs, tmp_path):
    files, overrides, message = CASES[case]
    data = tmp_path / "data"
    data.mkdir()
    for name, text in {"train.csv": GOOD, "dev.csv": GOOD, **files}.items():
        (data / name).write_bytes(text.encode("latin-1" if "\xe9" in text else "utf-8"))
    run_dir = tmp_path / "run"
    args = [a.format(data=data, tmp=inputs) for a in (f"data.path={data}", *overrides)]
    code, err = run_main(*FAST, *args, f"hydra.run.dir={run_dir}")
    assert code == 2, err[-3000:]
    assert "Traceback" not in err and "Error executing job" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, last
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "metrics.json").exists()


def test_at_least_thirty_bad_inputs_are_covered():
    assert len(CASES) >= 30


def test_the_command_itself_prints_one_line_and_exits_2(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text(GOOD + "no label here,\n")
    (data / "dev.csv").write_text(GOOD)
    proc = run_cli(*FAST, f"data.path={data}", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: 1 train rows have no value")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_data_format_reads_a_conll_file_whatever_its_suffix(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.annotated").write_text(CONLL)
    (data / "dev.tsv").write_text(CONLL_DEV)  # a CoNLL file named .tsv: read as CoNLL, not a table
    run_dir = tmp_path / "run"
    code, err = run_main(
        *FAST, "task=ner", f"data.path={data}", "data.format=conll",
        "data.train_file=train.annotated", "data.val_file=dev.tsv", f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    assert code == 0, err[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["val/f1"] <= 1.0
    labels = json.loads((run_dir / "export" / "config.json").read_text())["id2label"]
    assert sorted(labels.values()) == ["B-MISC", "B-ORG", "B-PER", "I-MISC", "I-ORG", "I-PER", "O"]
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] > 0


def test_a_run_directory_that_is_a_file_is_one_error_line(tmp_path):
    file = tmp_path / "a_file"
    file.write_text("not a folder\n")
    proc = run_cli(*FAST, f"hydra.run.dir={file}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: hydra.run.dir={file} is an existing file; name a directory"
    )
    assert file.read_text() == "not a folder\n"


def _data(tmp_path: Path, train: str) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text(train)
    (data / "dev.csv").write_text(GOOD)
    return data


def test_an_unreadable_file_is_one_error_line(tmp_path, monkeypatch):
    data = _data(tmp_path, GOOD)

    def no_permission(path, *a, **k):  # chmod 000 does not stop root, who runs CI: raised here
        if Path(path).name == "train.csv":
            raise PermissionError(13, "Permission denied", str(path))
        return open(path, *a, **k)

    monkeypatch.setattr("framework.readers.open", no_permission, raising=False)
    code, err = run_main(*FAST, f"data.path={data}", f"hydra.run.dir={tmp_path / 'run'}")
    assert code == 2 and "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot read {data / 'train.csv'} (Permission denied)"), last


def test_a_2_mb_line_trains_and_predicts(tmp_path):
    from tests.test_predict import predict_main

    long = "word " * 400_000  # 2 MB in one CSV field: Python's csv refuses 128 KiB by default
    data = _data(tmp_path, f"{GOOD}{long},positive\n")
    run = tmp_path / "run"
    code, err = run_main(*FAST, f"data.path={data}", f"hydra.run.dir={run}")
    assert code == 0, err[-3000:]
    rows = tmp_path / "rows.csv"
    rows.write_text(f"text\n{long}\nshort\n")
    code, out, err = predict_main(f"run={run}", f"input={rows}")
    assert code == 0, err[-3000:]
    assert [json.loads(line)["id"] for line in out.splitlines()] == [0, 1]


def test_empty_texts_train_with_a_warning_that_counts_them(tmp_path):
    data = _data(tmp_path, GOOD + ",negative\n   ,positive\n")
    code, err = run_main(*FAST, f"data.path={data}", f"hydra.run.dir={tmp_path / 'run'}")
    assert code == 0, err[-3000:]
    assert "warning: 2 of the train split's texts are empty (first: row 4)" in err


@pytest.mark.parametrize("how", ["import path", "task package"])
def test_a_plugin_that_exits_while_imported_is_one_error_line(how, tmp_path, monkeypatch):
    """``sys.exit(0)`` in a plug-in's module ended the run with status 0 and nothing trained."""
    (tmp_path / "exiting_plugin.py").write_text("import sys\n\nsys.exit(0)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "exiting_plugin", raising=False)
    chosen = (
        "task=exiting_plugin:Task" if how == "import path" else "task_packages=[exiting_plugin]"
    )
    code, err = run_main(*FAST, chosen, f"hydra.run.dir={tmp_path / 'run'}")
    assert code == 2 and "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "exit" in last and "exiting_plugin" in last, last


def test_a_plugin_whose_constructor_raises_is_one_error_line(tmp_path, monkeypatch):
    (tmp_path / "raising_plugin.py").write_text(
        "from tasks.classification import Classification\n\n\n"
        "class Raising(Classification):\n"
        "    def __init__(self, **kwargs):\n"
        "        raise RuntimeError('no GPU driver found')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    code, err = run_main(*FAST, "task=raising_plugin:Raising", f"hydra.run.dir={tmp_path / 'r'}")
    assert code == 2 and "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert "its constructor raised RuntimeError: no GPU driver found" in last, last


def test_predict_with_another_tasks_checkpoint_is_one_error_line(inputs, tmp_path):
    from tests.test_predict import predict_main

    data = _data(tmp_path, GOOD)
    run = tmp_path / "run"
    code, err = run_main(*FAST, f"data.path={data}", f"hydra.run.dir={run}")
    assert code == 0, err[-3000:]
    ner = inputs / "ner.ckpt"
    code, _, err = predict_main(f"run={run}", f"input={data / 'dev.csv'}", f"ckpt={ner}")
    assert code == 2 and "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert f"error: checkpoint {ner} " in last and "this run's checkpoints (ckpt=FILE)" in last


def test_a_plugin_reading_a_missing_column_without_check_columns_is_one_error_line(
    tmp_path, monkeypatch
):
    """No ``check_columns``: the task's own ``rows["review"]`` was a KeyError traceback."""
    (tmp_path / "unchecked_plugin.py").write_text(
        "from tasks.classification import Classification\n\n\n"
        "class Unchecked(Classification):\n"
        "    def check_columns(self, columns, split):\n"
        "        return None\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    data = _data(tmp_path, GOOD)
    code, err = run_main(
        *FAST, "task=unchecked_plugin:Unchecked", "task.text_column=review",
        f"data.path={data}", f"hydra.run.dir={tmp_path / 'run'}",
    )  # fmt: skip
    assert code == 2 and "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert "the task reads a column 'review', which the train split does not have" in last, last
    assert "(its columns: text, label)" in last, last
