"""Every registered encoder family through a whole run: train a few steps from a random
transformers checkpoint of the family, then ``framework.predict`` (file and stdin) and
``framework.evaluate`` on the finished run, its predictions equal to the exported model's in
transformers; the same for a copy of the run in another folder, for a resumed run and for a run
trained in bf16 (predict runs in full precision by default)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import transformers as tf

from framework.families import load_families
from tests.conftest import FAST
from tests.framework.test_families import FAMILIES
from tests.test_bad_inputs import run_main
from tests.test_predict import predict_main

# One checkpoint layout per registered family (model_type -> the name in FAMILIES).
LAYOUTS = {FAMILIES[n][0].model_type: n for n in FAMILIES if n != "electra_small"}
ROWS = ["a fine and moving film", "dull , long and badly acted", "the best thing this year"]


def test_every_registered_family_runs_here():
    assert set(LAYOUTS) == set(load_families())


@pytest.fixture(scope="module", params=sorted(LAYOUTS.values()))
def family_run(request, tmp_path_factory, tokenizer) -> tuple[str, Path, Path]:
    """(family, checkpoint directory, finished run directory): a random base model of the
    family, with all-MiniLM's tokenizer, fine-tuned on the quickstart data for 3 steps."""
    name = request.param
    config_cls, base_cls, _, kwargs = FAMILIES[name]
    sizes = {"vocab_size": len(tokenizer), "max_position_embeddings": 128 + 2}
    if name in ("roberta", "xlm-roberta", "gte"):  # roberta-base's table: 512 + pad + 1 rows
        sizes["max_position_embeddings"] = 514
    torch.manual_seed(0)
    model = base_cls(config_cls(**{**kwargs, **sizes}, attn_implementation="eager"))
    ckpt = tmp_path_factory.mktemp(f"{name}_checkpoint")
    model.save_pretrained(ckpt)
    tokenizer.save_pretrained(ckpt)
    run_dir = tmp_path_factory.mktemp(f"{name}_run") / "run"
    code, err = run_main(*FAST[1:], f"model.name_or_path={ckpt}", f"hydra.run.dir={run_dir}")
    assert code == 0, err[-3000:]
    return name, ckpt, run_dir


def _predict(run_dir: Path, tmp_path: Path) -> list[dict]:
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": t}) + "\n" for t in ROWS))
    out = tmp_path / "predictions.jsonl"
    code, _, err = predict_main(f"run={run_dir}", f"input={rows}", f"output={out}")
    assert code == 0, err[-3000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    code, stdout, err = predict_main(f"run={run_dir}", "input=-", stdin="\n".join(ROWS) + "\n")
    assert code == 0, err[-3000:]
    assert [json.loads(line) for line in stdout.splitlines()] == records
    return records


def _export_scores(export: Path) -> torch.Tensor:
    """The exported model's class probabilities in transformers, (rows, classes)."""
    tok = tf.AutoTokenizer.from_pretrained(export)
    model = tf.AutoModelForSequenceClassification.from_pretrained(export).eval()
    with torch.no_grad():
        logits = [model(**tok(t, return_tensors="pt")).logits[0] for t in ROWS]
    return torch.stack(logits).softmax(-1)


def _scores(records: list[dict]) -> torch.Tensor:
    return torch.tensor([list(r["scores"].values()) for r in records])


def test_predict_and_evaluate_a_finished_run_as_its_export(family_run, tmp_path):
    name, _, run_dir = family_run
    records = _predict(run_dir, tmp_path)
    assert [r["id"] for r in records] == [0, 1, 2]
    theirs = _export_scores(run_dir / "export")
    assert (_scores(records) - theirs).abs().max().item() <= 1e-4, name
    from framework.evaluate import main

    main([f"run={run_dir}", f"output_dir={tmp_path / 'eval'}"])
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    trained = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["val/loss"] == pytest.approx(trained["val/loss"], abs=1e-5)


def test_a_copied_run_predicts_the_same_without_its_source(family_run, tmp_path):
    _, ckpt, run_dir = family_run
    before = _predict(run_dir, tmp_path)
    copy = tmp_path / "copied" / "run"
    shutil.copytree(run_dir, copy)
    hidden = ckpt.with_name(ckpt.name + "_moved")
    ckpt.rename(hidden)  # the run must not need the checkpoint it was fine-tuned from
    try:
        assert _predict(copy, tmp_path) == before
    finally:
        hidden.rename(ckpt)


def test_a_resumed_run_trains_on_and_predicts_as_its_export(family_run, tmp_path):
    _, ckpt, run_dir = family_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    code, err = run_main(
        *FAST[1:], f"model.name_or_path={ckpt}", f"hydra.run.dir={copy}", "resume=auto",
        "trainer.max_epochs=2",
    )  # fmt: skip
    assert code == 0, err[-3000:]
    step = torch.load(copy / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert step == 6  # 3 more steps on top of the first run's 3
    records = _predict(copy, tmp_path)
    assert (_scores(records) - _export_scores(copy / "export")).abs().max().item() <= 1e-4


def test_a_bf16_run_predicts_as_its_fp32_export(tmp_path):
    """Predict runs in full precision by default, whatever the run trained in: its scores are
    the export's; ``trainer.precision=bf16-mixed`` on predict's command line asks for bf16."""
    from tasks.classification import Classification

    run_dir = tmp_path / "run"
    code, err = run_main(
        *FAST, "trainer.precision=bf16-mixed", "model.hidden_dropout=0", f"hydra.run.dir={run_dir}"
    )
    assert code == 0, err[-3000:]
    rows = [{"text": t} for t in ("a fine film", "dull and long", "the best thing this year")]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = Classification()
    theirs = torch.stack(task.hf_logits(run_dir / "export", rows)).softmax(-1)

    def scores(*extra: str) -> torch.Tensor:
        code, out, err = predict_main(f"run={run_dir}", f"input={data}", *extra)
        assert code == 0, err[-3000:]
        return _scores([json.loads(line) for line in out.splitlines()])

    # scores are written with 6 decimals; bf16 is off by 1e-4 on this tiny model
    assert (scores() - theirs).abs().max().item() <= 1e-5
    assert (scores("trainer.precision=bf16-mixed") - theirs).abs().max().item() > 1e-5
