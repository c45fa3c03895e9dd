"""Sentence embeddings: a tasklight recipe, as shipped, vs sentence-transformers' own trainer.

One invocation runs, per seed and back to back, each in its own process (peak RSS per side):

- ``st``: ``SentenceTransformerTrainer.train()`` on ``SentenceTransformer(all-MiniLM-L6-v2)``
  with the recipe's loss (``CoSENTLoss`` or ``MultipleNegativesRankingLoss``, the same scale);
- ``tasklight``: ``python -m framework.train experiment=RECIPE data.path=DATA seed=S``, nothing
  else changed: the default a user runs;

and once, ``before``: the un-fine-tuned all-MiniLM-L6-v2, measured as the ``st`` side's model is
(tasklight's embeddings of it equal sentence-transformers' within 1e-5: tests/tasks/
test_embedding.py, so this one number is both sides' start).

Recipes: ``stsb_embedding`` (STS-B, every train pair with its gold score, CoSENT; dev Spearman
and Pearson of the cosine) and ``squad_retrieval`` (SQuAD split by article: each question's
positive is its paragraph, in-batch negatives; dev retrieval of each question's paragraph among
all the split's paragraphs: recall@1/@10, MRR@10, nDCG@10). Both sides: the same rows (with
``data.max_train_samples``, tasklight's draw ``Dataset.shuffle(seed).select(range(N))``), max
length, and every hyperparameter read from the composed recipe: batch size, epochs, learning
rate, warm-up ratio then linear decay to 0, weight decay (not on biases and LayerNorm), AdamW
betas and eps (fused on both sides), gradient clipping, hidden and attention dropout. Dev
metrics: the task's own metric code (``Task.update_metrics``) on both sides, from embeddings of
the whole dev split. One difference, named: for ``squad_retrieval`` the ``st`` side batches with
``BatchSamplers.NO_DUPLICATES`` (sentence-transformers' advice for this loss, so that no copy of
a positive is a negative); tasklight keeps random batches and leaves a copy of a text's positive
out of its softmax instead (``mnrl_loss`` with keys).

Timed span, both sides: each training batch from its start to the end of its optimizer step
(tasklight: ``train_seconds`` in ``metrics.json``; ST: ``on_step_begin`` to ``on_step_end``).

    python bench/embedding_vs_st.py --recipe stsb_embedding --data ../shared/data/stsb

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

SIDES = ("st", "tasklight")
METRICS = {
    "stsb_embedding": ("val/spearman", "val/pearson"),
    "squad_retrieval": ("val/recall_at_1", "val/recall_at_10", "val/mrr_at_10", "val/ndcg_at_10"),
}


def overrides(name: str, data: Path, seed: int, extra: list[str]) -> list[str]:
    return [f"experiment={name}", f"data.path={data}", f"seed={seed}", *extra]


def setup(name: str, data: Path, seed: int, extra: list[str]) -> tuple:
    """(composed config, task, {split: raw rows}) with tasklight's train subset."""
    from datasets import Dataset
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer

    import tasks  # noqa: F401  (registers the tasks)
    from framework.config import register_resolvers
    from framework.data import DataModule
    from framework.readers import gather
    from framework.registry import build_task

    register_resolvers()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides(name, data, seed, extra),
                                          "paths.output_dir=/tmp/x"])  # fmt: skip
    task = build_task(cfg.task)
    tokenizer = AutoTokenizer.from_pretrained(cfg.model.name_or_path)
    dm = DataModule(task, tokenizer, seed=seed, **OmegaConf.to_container(cfg.data, resolve=True))
    rows = {split: gather(dm.raw_chunks(split), split) for split in ("train", "val")}
    n = cfg.data.max_train_samples
    if n is not None and n < len(rows["train"][task.text_column]):  # as DataModule.setup_data
        rows["train"] = Dataset.from_dict(rows["train"]).shuffle(seed=seed).select(range(n))[:]
    return cfg, task, rows


def load_st(cfg):
    from sentence_transformers import SentenceTransformer

    m = cfg.model
    dropouts = {"attention_probs_dropout_prob": m.attention_dropout}
    if m.hidden_dropout is not None:
        dropouts["hidden_dropout_prob"] = m.hidden_dropout
    model = SentenceTransformer(
        m.name_or_path,
        device="cpu",
        config_kwargs=dropouts,
        model_kwargs={"attn_implementation": "sdpa"},
    )
    model.max_seq_length = cfg.data.max_length
    return model


def evaluate(model, task, rows: dict, batch_size: int) -> dict:
    """The dev metrics of ``model``'s embeddings, by the task's own metric code."""
    import torch
    import torch.nn.functional as F

    from framework.task import StepOutput
    from tasks.embedding import _key

    texts, pairs = rows[task.text_column], rows[task.text_pair_column]
    kw = {"batch_size": batch_size, "convert_to_tensor": True}
    a, b = model.encode(texts, **kw).float(), model.encode(pairs, **kw).float()
    cos = F.cosine_similarity(a, b, dim=-1)
    score = torch.tensor([float(s) for s in rows[task.score_column]]) if task.score_column else None
    keys = torch.tensor([_key(p) for p in pairs])
    metrics = task.metrics("val")
    out = StepOutput(None, cos, {"cos": cos, "texts": a, "pairs": b, "key": keys}, score)
    task.update_metrics(metrics, out, {})
    return {f"val/{k}": float(v) for k, v in metrics.compute().items()}


def run_st(name: str, data: Path, seed: int, extra: list[str], before: bool) -> dict:
    import torch
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer import losses

    from bench.finetune_vs_hf import recipe_optimizer, step_timer

    cfg, task, rows = setup(name, data, seed, extra)
    d = cfg.data
    eval_bs = d.eval_batch_size or d.batch_size
    torch.manual_seed(seed)
    model = load_st(cfg)
    if before:
        return evaluate(model.eval(), task, rows["val"], eval_bs)
    cols = [
        task.text_column,
        task.text_pair_column,
        *([task.score_column] * bool(task.score_column)),
    ]
    train = {c: rows["train"][c] for c in cols}
    if task.score_column:  # a table's cells are read as text; the task encodes them as floats
        train[task.score_column] = [float(x) for x in train[task.score_column]]
    train = Dataset.from_dict(train)
    if task.loss == "cosent":
        if task.score_column != "score":  # the label column ST detects
            train = train.rename_column(task.score_column, "score")
        loss = losses.CoSENTLoss(model, scale=task.scale)
    else:
        loss = losses.MultipleNegativesRankingLoss(model, scale=task.scale)
    opt, sched = recipe_optimizer(model, cfg, len(train), ("no head",))

    timer = step_timer()
    sampler = BatchSamplers.NO_DUPLICATES if task.loss == "mnrl" else BatchSamplers.BATCH_SAMPLER
    with tempfile.TemporaryDirectory() as out:
        args = SentenceTransformerTrainingArguments(
            output_dir=out,
            per_device_train_batch_size=d.batch_size,
            num_train_epochs=cfg.trainer.max_epochs,
            max_grad_norm=cfg.trainer.gradient_clip_val,
            batch_sampler=sampler,
            eval_strategy="no",
            save_strategy="no",
            logging_strategy="no",
            report_to=[],
            seed=seed,
            data_seed=seed,
            dataloader_num_workers=0,
            use_cpu=True,
            disable_tqdm=True,
        )
        trainer = SentenceTransformerTrainer(
            model=model, args=args, train_dataset=train, loss=loss,
            optimizers=(opt, sched), callbacks=[timer],
        )  # fmt: skip
        trainer.train()
    result = evaluate(model.eval(), task, rows["val"], eval_bs)
    return result | {"train_seconds": round(timer.seconds, 3), "steps": timer.steps}


def run_tasklight(name: str, data: Path, seed: int, workdir: Path, extra: list[str]) -> dict:
    run_dir = workdir / f"tasklight-{name}-seed{seed}"
    cmd = [sys.executable, "-m", "framework.train", *overrides(name, data, seed, extra),
           f"hydra.run.dir={run_dir}"]  # fmt: skip
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {k: metrics[k] for k in METRICS[name]} | {"train_seconds": metrics["train_seconds"]}


def child(name: str, side: str, data: Path, seed: int, workdir: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--one", side, "--recipe", name, "--data", str(data),
           "--seeds", str(seed), "--workdir", str(workdir)]  # fmt: skip
    cmd += [f"--overrides={o}" for o in extra]
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    if proc.returncode:
        raise SystemExit(f"{side} seed {seed} failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    from bench.finetune_vs_hf import peak_rss_mib

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="the recipe's data folder")
    ap.add_argument("--recipe", choices=sorted(METRICS), default="stsb_embedding")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    ap.add_argument("--workdir", type=Path, default=None, help="tasklight run dirs (default: tmp)")
    ap.add_argument("--overrides", action="append", default=[], help="Hydra override, both sides")
    ap.add_argument("--one", choices=(*SIDES, "before"), help=argparse.SUPPRESS)  # one child run
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    data, name, extra = a.data.resolve(), a.recipe, list(a.overrides)
    workdir = a.workdir or Path(tempfile.mkdtemp(prefix="embedding_vs_st-"))
    if a.one:
        seed = a.seeds[0]
        if a.one == "tasklight":
            result = run_tasklight(name, data, seed, workdir, extra)
        else:
            result = run_st(name, data, seed, extra, before=a.one == "before")
        print(json.dumps(result | {"peak_rss_mib": peak_rss_mib()}))
        return
    import torch

    first = METRICS[name][0]
    before = child(name, "before", data, a.seeds[0], workdir, extra)
    print(f"before fine-tuning: {before}", flush=True)
    runs: dict[str, list[dict]] = {side: [] for side in a.sides}
    for seed in a.seeds:
        for side in a.sides:
            r = child(name, side, data, seed, workdir, extra) | {"seed": seed}
            runs[side].append(r)
            print(f"seed {seed} {side:9s} train_seconds {r['train_seconds']:8.1f}  {first} "
                  f"{r[first]:.4f}  peak RSS {r['peak_rss_mib']:7.0f} MiB", flush=True)  # fmt: skip
    summary = {}
    for side, rs in runs.items():
        seconds = statistics.mean(r["train_seconds"] for r in rs)
        summary[side] = {"train_seconds_mean": round(seconds, 2),
                         "peak_rss_mib_max": max(r["peak_rss_mib"] for r in rs)}  # fmt: skip
        for k in METRICS[name]:
            values = [r[k] for r in rs]
            summary[side][f"{k}_mean"] = round(statistics.mean(values), 4)
            summary[side][f"{k}_spread"] = round(max(values) - min(values), 4)
    if "tasklight" in runs:
        ours = summary["tasklight"]["train_seconds_mean"]
        for side in runs:
            summary[side]["speedup_of_tasklight"] = round(
                summary[side]["train_seconds_mean"] / ours, 2
            )
    for side, s in summary.items():
        print(f"{side:9s} {s}")
    record = {"recipe": name, "seeds": a.seeds, "threads": torch.get_num_threads(),
              "overrides": extra, "before": before, "summary": summary, "runs": runs}  # fmt: skip
    print(json.dumps(record))


if __name__ == "__main__":
    main()
