"""Fine-tuning time and accuracy: tasklight's default ``experiment=sst2`` vs the HF Trainer.

One invocation runs, per seed and back to back, each in its own process (so that peak RSS is
per side):

- ``hf_dynamic``: ``transformers.Trainer.train()`` with dynamic padding (its default collator);
- ``hf_grouped``: the same with length-grouped batches (``train_sampling_strategy=
  "group_by_length"``, transformers 4's ``group_by_length=True``);
- ``tasklight``: ``python -m framework.train experiment=sst2 data.path=DATA
  data.max_train_samples=N seed=S`` with nothing else changed (the default a user runs).

Both sides: all-MiniLM-L6-v2, the same seeded subset of N training sentences (tasklight's own
``max_train_samples`` draw: ``Dataset.shuffle(seed).select(range(N))``), max length 128, batch
32, 1 epoch, lr 5e-5 with the recipe's head learning rate (x``optim.head_lr_scale`` on the pooler
and classifier), linear warm-up 10% then decay to 0, weight decay 0.01 (not on biases and
LayerNorm), gradient clipping 1.0, fused AdamW, the same dropouts (hidden 0.1, attention as the
recipe's model config, classifier 0.1). The HF side gets these from the composed tasklight config,
so the two cannot drift apart.

Timed span, both sides: each training batch from its start (after loading) to the end of its
optimizer step (tasklight: ``train_seconds`` in ``metrics.json``; HF: ``on_step_begin`` to
``on_step_end``). No validation or checkpoint writes inside it. Dev accuracy on the 872 GLUE dev
sentences. The last output line is JSON.

    python bench/finetune_vs_hf.py --data DIR [--train-samples 8000] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIDES = ("hf_dynamic", "hf_grouped", "tasklight")


def recipe(data: Path, n: int, seed: int) -> list[str]:
    """The tasklight command's overrides: the default recipe, data and subset only."""
    return ["experiment=sst2", f"data.path={data}", f"data.max_train_samples={n}", f"seed={seed}"]


def run_hf(data: Path, n: int, seed: int, group_by_length: bool) -> dict:
    """One HF Trainer run in this process, configured from the composed tasklight recipe."""
    import torch
    from datasets import Dataset
    from hydra import compose, initialize_config_dir
    from transformers import (
        AutoTokenizer,
        BertForSequenceClassification,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        get_linear_schedule_with_warmup,
    )

    from framework.config import register_resolvers
    from framework.data import read_table

    register_resolvers()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*recipe(data, n, seed), "paths.output_dir=/tmp/x"])
    d, o, m, t = cfg.data, cfg.optim, cfg.model, cfg.task
    tokenizer = AutoTokenizer.from_pretrained(m.name_or_path)
    train = Dataset.from_dict(read_table(data / d.train_file))
    train = train.shuffle(seed=seed).select(range(n))  # tasklight's max_train_samples draw
    dev = Dataset.from_dict(read_table(data / d.val_file))

    def encode(rows):
        enc = tokenizer(rows[t.text_column], truncation=True, max_length=d.max_length)
        enc["labels"] = [int(x) for x in rows["label"]]
        return enc

    cols = train.column_names
    train, dev = (s.map(encode, batched=True, remove_columns=cols) for s in (train, dev))
    torch.manual_seed(seed)
    model = BertForSequenceClassification.from_pretrained(
        m.name_or_path,
        num_labels=2,
        attn_implementation="sdpa",
        attention_probs_dropout_prob=m.attention_dropout,
        hidden_dropout_prob=0.1 if m.hidden_dropout is None else m.hidden_dropout,
        classifier_dropout=t.dropout,
    )
    # The recipe's parameter groups: no decay on 1-d parameters, the head at lr x head_lr_scale.
    groups = []
    head = ("bert.pooler.", "classifier.")
    for is_head in (False, True):
        lr = o.lr * (o.head_lr_scale if is_head else 1.0)
        params = [(k, p) for k, p in model.named_parameters() if k.startswith(head) == is_head]
        for decay in (True, False):
            ps = [p for _, p in params if (p.ndim > 1) == decay]
            groups.append({"params": ps, "lr": lr, "weight_decay": o.weight_decay if decay else 0})
    opt = torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps, fused=True)
    steps = -(-n // d.batch_size) * cfg.trainer.max_epochs
    sched = get_linear_schedule_with_warmup(opt, int(o.warmup_ratio * steps), steps)

    class StepTimer(TrainerCallback):
        seconds, steps, _start = 0.0, 0, 0.0

        def on_step_begin(self, args, state, control, **kw):
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.seconds += time.perf_counter() - self._start
            self.steps += 1

    timer = StepTimer()
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=d.batch_size,
            per_device_eval_batch_size=d.eval_batch_size,
            num_train_epochs=cfg.trainer.max_epochs,
            max_grad_norm=cfg.trainer.gradient_clip_val,
            # transformers 5: the sampler is named; 4.x: group_by_length=True.
            train_sampling_strategy="group_by_length" if group_by_length else "random",
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
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=train,
            data_collator=DataCollatorWithPadding(tokenizer),
            optimizers=(opt, sched),
            callbacks=[timer],
        )
        start = time.perf_counter()
        trainer.train()
        train_wall = time.perf_counter() - start
        pred = trainer.predict(dev)
    acc = float((pred.predictions.argmax(-1) == pred.label_ids).mean())
    return {"train_seconds": round(timer.seconds, 3), "train_call_seconds": round(train_wall, 3),
            "steps": timer.steps, "dev_acc": acc}  # fmt: skip


def run_tasklight(data: Path, n: int, seed: int, workdir: Path) -> dict:
    run_dir = workdir / f"tasklight-seed{seed}"
    cmd = [sys.executable, "-m", "framework.train", *recipe(data, n, seed),
           f"hydra.run.dir={run_dir}"]  # fmt: skip
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {"train_seconds": metrics["train_seconds"], "fit_seconds": metrics["fit_seconds"],
            "dev_acc": metrics["val/acc"]}  # fmt: skip


def child(side: str, data: Path, n: int, seed: int, workdir: Path) -> dict:
    """Run one side in a child process (its peak RSS is its own)."""
    cmd = [sys.executable, __file__, "--one", side, "--data", str(data), "--train-samples",
           str(n), "--seeds", str(seed), "--workdir", str(workdir)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    if proc.returncode:
        raise SystemExit(f"{side} seed {seed} failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def peak_rss_mib() -> float:
    """The peak RSS of this process or of its largest finished child (the tasklight run)."""
    import resource

    kib = max(resource.getrusage(who).ru_maxrss
              for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))  # fmt: skip
    return round(kib / 1024, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="GLUE SST-2 folder (train/dev.tsv)")
    ap.add_argument("--train-samples", type=int, default=8000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    ap.add_argument("--workdir", type=Path, default=None, help="tasklight run dirs (default: tmp)")
    ap.add_argument("--one", choices=SIDES, help=argparse.SUPPRESS)  # internal: one child run
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    data = a.data.resolve()
    workdir = a.workdir or Path(tempfile.mkdtemp(prefix="finetune_vs_hf-"))
    if a.one:
        seed = a.seeds[0]
        if a.one == "tasklight":
            result = run_tasklight(data, a.train_samples, seed, workdir)
        else:
            result = run_hf(data, a.train_samples, seed, a.one == "hf_grouped")
        result["peak_rss_mib"] = peak_rss_mib()
        print(json.dumps(result))
        return
    import torch

    runs: dict[str, list[dict]] = {side: [] for side in a.sides}
    for seed in a.seeds:
        for side in a.sides:
            r = child(side, data, a.train_samples, seed, workdir)
            r["seed"] = seed
            runs[side].append(r)
            print(
                f"seed {seed} {side:11s} train_seconds {r['train_seconds']:8.1f}  dev acc "
                f"{r['dev_acc']:.4f}  peak RSS {r.get('peak_rss_mib', 0):7.0f} MiB",
                flush=True,
            )
    summary = {}
    for side, rs in runs.items():
        summary[side] = {
            "train_seconds_mean": round(statistics.mean(r["train_seconds"] for r in rs), 2),
            "dev_acc_mean": round(statistics.mean(r["dev_acc"] for r in rs), 4),
            "peak_rss_mib_max": max(r.get("peak_rss_mib", 0) for r in rs),
        }
    if "tasklight" in runs:
        ours = summary["tasklight"]["train_seconds_mean"]
        for side in runs:
            summary[side]["speedup_of_tasklight"] = round(
                summary[side]["train_seconds_mean"] / ours, 2
            )
    for side, s in summary.items():
        print(f"{side:11s} {s}")
    print(json.dumps({"train_samples": a.train_samples, "seeds": a.seeds, "threads":
                      torch.get_num_threads(), "summary": summary, "runs": runs}))  # fmt: skip


if __name__ == "__main__":
    main()
