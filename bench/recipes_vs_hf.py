"""Dev metric of a tasklight recipe beside an HF Trainer run on the same model, data and settings.

Recipes: ``stsb`` (Pearson), ``mrpc`` (accuracy, F1 of the paraphrase class), ``goemotions``
(macro-F1), ``squad`` (EM, F1), ``commonsenseqa`` (accuracy). For each seed, in child processes:

- ``tasklight``: ``python -m framework.train experiment=RECIPE data.path=DATA seed=S``, as shipped;
- ``hf``: ``transformers.Trainer.train()`` on the ``BertFor...`` class of the task
  (all-MiniLM-L6-v2 weights), with every hyperparameter read from the composed recipe: batch size,
  epochs, learning rate (x ``optim.head_lr_scale`` on the head), warm-up ratio and linear decay,
  weight decay (none on biases and LayerNorm), AdamW betas/eps, gradient clipping, dropouts.

Both sides train on the same examples: the HF side takes its features from tasklight's data
module (same subset, same tokenization, windows and labels), so the comparison is of training,
not of preprocessing; the HF Trainer batches them randomly with dynamic padding (its default).
The HF side's dev predictions are scored by the task's own metric code (``Task.step`` on the HF
model's outputs, then ``Task.update_metrics``): the same metric on both sides.

    python bench/recipes_vs_hf.py --recipe stsb --data ../shared/data/stsb [--seeds 0]

The last output line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# recipe -> the metrics reported (the first is the one the recipe monitors)
METRICS = {
    "stsb": ["val/pearson", "val/spearman"],
    "mrpc": ["val/acc", "val/f1_positive"],
    "goemotions": ["val/f1_macro", "val/f1_micro"],
    "squad": ["val/exact_match", "val/f1"],
    "commonsenseqa": ["val/acc"],
}
HEAD_PREFIXES = ("bert.pooler.", "classifier.", "qa_outputs.")


EXTRA: list[str] = []  # --override: more config overrides, on both sides (e.g. a smoke test)


def overrides(name: str, data: Path, seed: int) -> list[str]:
    return [f"experiment={name}", f"data.path={data}", f"seed={seed}", *EXTRA]


def hf_model(cfg, task):
    """The ``BertFor...`` model of the task, from the recipe's pretrained weights."""
    import transformers

    m = cfg.model
    kwargs = {
        "attn_implementation": "sdpa",
        "attention_probs_dropout_prob": m.attention_dropout,
        "hidden_dropout_prob": 0.1 if m.get("hidden_dropout") is None else m.hidden_dropout,
    }
    name = task.name
    if name in ("classification", "regression", "multilabel"):
        kwargs["num_labels"] = task.num_outputs
        kwargs["problem_type"] = task.problem_type
        kwargs["classifier_dropout"] = task.dropout
        cls = transformers.BertForSequenceClassification
    elif name == "multiple_choice":
        kwargs["classifier_dropout"] = task.dropout
        cls = transformers.BertForMultipleChoice
    elif name == "qa":
        cls = transformers.BertForQuestionAnswering
    else:
        raise SystemExit(f"no HF side for task {name}")
    return cls.from_pretrained(m.name_or_path, **kwargs)


def hf_batch(task, batch: dict) -> dict:
    """tasklight's collated batch -> the HF model's keyword arguments."""
    out = task.hf_inputs(batch)
    if "labels" in batch:
        labels = batch["labels"]
        out["labels"] = labels.float() if task.name in ("multilabel", "regression") else labels
    for key in ("start_positions", "end_positions"):
        if key in batch:
            out[key] = batch[key]
    return out


def run_hf(name: str, data: Path, seed: int) -> dict:
    import torch
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from torch import nn
    from transformers import (
        AutoTokenizer,
        Trainer,
        TrainingArguments,
    )

    import tasks  # noqa: F401  (registers the tasks)
    from bench.finetune_vs_hf import recipe_optimizer
    from framework.config import register_resolvers
    from framework.data import DataModule
    from framework.registry import build_task

    register_resolvers()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides(name, data, seed), "paths.output_dir=/tmp/x"])
    d = cfg.data
    tokenizer = AutoTokenizer.from_pretrained(cfg.model.name_or_path)
    task = build_task(cfg.task)
    dm = DataModule(task, tokenizer, seed=seed, **OmegaConf.to_container(d, resolve=True))
    dm.setup_data()  # the same features tasklight trains on
    torch.manual_seed(seed)
    model = hf_model(cfg, task)
    train = dm.splits["train"]
    opt, sched = recipe_optimizer(model, cfg, len(train), HEAD_PREFIXES)
    pad = tokenizer.pad_token_id

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=d.batch_size,
            num_train_epochs=cfg.trainer.max_epochs,
            max_grad_norm=cfg.trainer.gradient_clip_val,
            eval_strategy="no",
            save_strategy="no",
            logging_strategy="no",
            report_to=[],
            seed=seed,
            data_seed=seed,
            dataloader_num_workers=0,
            remove_unused_columns=False,
            use_cpu=True,
            disable_tqdm=True,
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=train,
            data_collator=lambda feats: hf_batch(task, task.collate(feats, pad)),
            optimizers=(opt, sched),
        )
        trainer.train()
    model.eval()
    metrics = task.metrics("val")
    dev = dm.splits["val"]
    bs = d.eval_batch_size or d.batch_size
    with torch.no_grad():
        for i in range(0, len(dev), bs):
            batch = task.collate(list(dev.select(range(i, min(i + bs, len(dev))))), pad)
            logits = task.hf_outputs(model(**task.hf_inputs(batch)), batch)
            if task.name == "multiple_choice":
                logits = logits.reshape(-1, 1)  # one score per (question, candidate) row
            # the task's own step and metrics, on the HF model's outputs
            task.update_metrics(metrics, task.step(nn.Identity(), logits, batch), batch)
    values = {f"val/{k}": float(v) for k, v in metrics.compute().items()}
    return {k: values[k] for k in METRICS[name]}


def run_tasklight(name: str, data: Path, seed: int, workdir: Path) -> dict:
    run_dir = workdir / f"tasklight-{name}-seed{seed}"
    cmd = [sys.executable, "-m", "framework.train", *overrides(name, data, seed),
           f"hydra.run.dir={run_dir}"]  # fmt: skip
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {k: metrics[k] for k in METRICS[name]} | {"train_seconds": metrics["train_seconds"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--recipe", choices=sorted(METRICS), required=True)
    ap.add_argument("--data", type=Path, required=True, help="the recipe's data folder")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--sides", nargs="+", choices=["tasklight", "hf"], default=["tasklight", "hf"])
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--override", nargs="*", default=[], help="config overrides, both sides")
    ap.add_argument("--one", choices=["tasklight", "hf"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    EXTRA[:] = a.override
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    data, name = a.data.resolve(), a.recipe
    workdir = a.workdir or Path(tempfile.mkdtemp(prefix="recipes_vs_hf-"))
    if a.one:
        seed = a.seeds[0]
        run = run_tasklight(name, data, seed, workdir) if a.one == "tasklight" else None
        print(json.dumps(run or run_hf(name, data, seed)))
        return
    runs: dict[str, list[dict]] = {side: [] for side in a.sides}
    for seed in a.seeds:
        for side in a.sides:
            cmd = [sys.executable, __file__, "--one", side, "--recipe", name, "--data", str(data),
                   "--seeds", str(seed), "--workdir", str(workdir)]  # fmt: skip
            cmd += ["--override", *a.override]
            proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
            if proc.returncode:
                raise SystemExit(f"{side} seed {seed} failed (exit {proc.returncode})")
            r = json.loads(proc.stdout.strip().splitlines()[-1]) | {"seed": seed}
            runs[side].append(r)
            shown = " ".join(f"{k}={r[k]:.4f}" for k in METRICS[name])
            print(f"seed {seed} {side:9s} {shown}", flush=True)
    summary = {
        side: {f"{k}_mean": round(statistics.mean(r[k] for r in rs), 4) for k in METRICS[name]}
        for side, rs in runs.items()
    }
    print(json.dumps({"recipe": name, "seeds": a.seeds, "summary": summary, "runs": runs}))


if __name__ == "__main__":
    main()
