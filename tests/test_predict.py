"""``framework.predict`` and ``framework.evaluate`` on trained runs of every task.

Each task trains a tiny run on its synthetic rows (JSON lines files), then predicts its dev file
(from the file, and from stdin) and the predictions are compared, in input order, with the
exported Hugging Face model's on the same rows.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

import pytest
import torch
import transformers

from framework.registry import get_task
from tests.test_bad_inputs import run_main

TASKS = ["classification", "ner", "regression", "multilabel", "multiple_choice", "qa", "mlm"]


def _write_jsonl(path: Path, rows: dict[str, list]) -> None:
    n = len(next(iter(rows.values())))
    lines = [json.dumps({k: v[i] for k, v in rows.items()}) for i in range(n)]
    path.write_text("\n".join(lines) + "\n")


def _dev_rows(task, name: str) -> dict[str, list]:
    rows = task.synthetic_rows(6, seed=1)
    if name == "mlm":  # texts with a [MASK] to fill in, of different lengths
        rows = {"text": ["the cat sat on the [MASK] .", "a dog [MASK] far", "[MASK] home"]}
    if name == "qa":  # varied lengths, so that sorting by length reorders them
        rows["context"] = [c + " and then" * i for i, c in enumerate(rows["context"])]
    return rows


@pytest.fixture(scope="module", params=TASKS)
def trained(request, tmp_path_factory) -> tuple[str, Path, Path]:
    """(task name, run directory, dev file) of a tiny run of the task."""
    name = request.param
    task = get_task(name)()
    data = tmp_path_factory.mktemp(f"data_{name}")
    _write_jsonl(data / "train.jsonl", task.synthetic_rows(24, seed=0))
    _write_jsonl(data / "dev.jsonl", _dev_rows(task, name))
    run_dir = tmp_path_factory.mktemp(f"run_{name}")
    code, err = run_main(
        "model=tiny", "debug=fast", "trainer.accelerator=cpu", f"task={name}",
        f"data.path={data}", "data.train_file=train.jsonl", "data.val_file=dev.jsonl",
        "data.format=jsonl", "data.max_length=64", "~callbacks.rich_progress_bar",
        "~callbacks.model_summary", f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    assert code == 0, err[-3000:]
    return name, run_dir, data / "dev.jsonl"


def predict_main(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    from framework.predict import main

    out, err = io.StringIO(), io.StringIO()
    old_stdin = sys.stdin
    code = 0
    try:
        if stdin is not None:
            sys.stdin = io.StringIO(stdin)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main(list(args))
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.stdin = old_stdin
    return code, out.getvalue(), err.getvalue()


def _hf_predictions(name: str, export: Path, rows: list[dict]) -> list:
    """What the exported model predicts for each row, in the records' terms."""
    tok = transformers.AutoTokenizer.from_pretrained(export)
    config = transformers.AutoConfig.from_pretrained(export)
    if name == "qa":  # transformers 5 has no question-answering pipeline: the span by hand
        model = transformers.BertForQuestionAnswering.from_pretrained(export).eval()
        out = []
        for r in rows:
            enc = tok(r["question"], r["context"], return_offsets_mapping=True)
            offsets = enc.pop("offset_mapping")
            with torch.no_grad():
                o = model(**{k: torch.tensor([v]) for k, v in enc.items()})
            ctx = [i for i, s in enumerate(enc.sequence_ids()) if s == 1]
            s_, e_ = o.start_logits[0], o.end_logits[0]
            spans = [(i, j) for i in ctx for j in ctx if 0 <= j - i < 30]
            i, j = max(spans, key=lambda p: float(s_[p[0]] + e_[p[1]]))
            out.append(r["context"][offsets[i][0] : offsets[j][1]])
        return out
    if name == "mlm":
        fill = transformers.pipeline("fill-mask", model=str(export), tokenizer=str(export))
        return [[c[0]["token_str"] for c in [fill(r["text"], top_k=1)]] for r in rows]
    model = getattr(transformers, config.architectures[0]).from_pretrained(export).eval()
    out = []
    with torch.no_grad():
        for r in rows:
            if name == "ner":
                enc = tok(r["tokens"], is_split_into_words=True, return_tensors="pt")
                tags = model(**enc).logits[0].argmax(-1).tolist()
                first = {}
                for pos, w in enumerate(enc.word_ids()):
                    if w is not None and w not in first:
                        first[w] = config.id2label[tags[pos]]
                out.append([first[w] for w in sorted(first)])
            elif name == "multiple_choice":
                enc = tok([r["question"]] * len(r["choices"]), r["choices"], return_tensors="pt",
                          padding=True)  # fmt: skip
                logits = model(**{k: v[None] for k, v in enc.items()}).logits[0]
                out.append(int(logits.argmax()))
            else:
                logits = model(**tok(r["text"], return_tensors="pt")).logits[0]
                if name == "classification":
                    out.append(config.id2label[int(logits.argmax())])
                elif name == "regression":
                    out.append(float(logits[0]))
                else:  # multilabel
                    out.append(logits.sigmoid().tolist())
    return out


def _ours(name: str, record: dict):
    return {
        "classification": lambda r: r["label"],
        "regression": lambda r: r["value"],
        "multilabel": lambda r: list(r["scores"].values()),
        "ner": lambda r: r["tags"],
        "multiple_choice": lambda r: r["choice"],
        "qa": lambda r: r["answer"],
        "mlm": lambda r: r["filled"],
    }[name](record)


def test_predict_file_and_stdin_in_input_order_as_the_export(trained, tmp_path):
    name, run_dir, dev = trained
    out_file = tmp_path / "pred.jsonl"
    code, _, err = predict_main(f"run={run_dir}", f"input={dev}", f"output={out_file}")
    assert code == 0, err[-3000:]
    records = [json.loads(line) for line in out_file.read_text().splitlines()]
    rows = [json.loads(line) for line in dev.read_text().splitlines()]
    assert [r["id"] for r in records] == list(range(len(rows)))
    theirs = _hf_predictions(name, run_dir / "export", rows)
    ours = [_ours(name, r) for r in records]
    if name in ("regression", "multilabel"):
        assert torch.allclose(torch.tensor(ours), torch.tensor(theirs), atol=1e-4)
    else:
        assert ours == theirs
    # stdin: plain text lines where the task reads them, else JSON lines
    if name in ("classification", "ner", "mlm", "regression", "multilabel"):
        key = {"ner": "tokens"}.get(name, "text")
        lines = [" ".join(r[key]) if name == "ner" else r[key] for r in rows]
    else:
        lines = [json.dumps(r) for r in rows]
    code, stdout, err = predict_main(f"run={run_dir}", "input=-", stdin="\n".join(lines) + "\n")
    assert code == 0, err[-3000:]
    assert [json.loads(line) for line in stdout.splitlines()] == records


def test_evaluate_writes_metrics_and_figures(trained, tmp_path):
    from framework.evaluate import main

    name, run_dir, _ = trained
    if name != "classification":
        pytest.skip("one task is enough for the command (every task's metrics run in training)")
    out = tmp_path / "eval"
    main([f"run={run_dir}", f"output_dir={out}", "data.val_file=dev.jsonl"])
    metrics = json.loads((out / "metrics.json").read_text())
    trained_metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["val/acc"] == pytest.approx(trained_metrics["val/acc"])
    assert metrics["examples"] == 6
    assert (out / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"


def test_predict_errors_are_one_line(trained, tmp_path):
    name, run_dir, dev = trained
    if name != "classification":
        pytest.skip("once")
    for args, text in (
        ((f"input={dev}",), "run=RUN_DIR"),
        ((f"run={tmp_path}", f"input={dev}"), "not a run directory"),
        ((f"run={run_dir}", "input=missing.jsonl"), "does not exist"),
        ((f"run={run_dir}", f"input={dev}", "colour=red"), "unknown argument 'colour'"),
    ):
        code, _, err = predict_main(*args)
        assert code == 2 and text in err and "Traceback" not in err, err


FIGURES = {"classification": "confusion_matrix", "ner": "f1_per_type", "regression":
           "predicted_vs_gold"}  # fmt: skip


def test_every_run_writes_its_curves_and_its_task_figure(trained):
    name, run_dir, _ = trained
    expected = ["curves"] + ([FIGURES[name]] if name in FIGURES else [])
    for figure in expected:
        assert (run_dir / f"{figure}.png").read_bytes()[:4] == b"\x89PNG", figure
