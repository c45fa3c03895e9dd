"""Fine-tuning time and quality: a tasklight recipe, as shipped, vs the HF Trainer on the same work.

One invocation runs, per seed and back to back, each in its own process (so that peak RSS is
per side):

- ``hf_dynamic``: ``transformers.Trainer.train()`` with dynamic padding (random batches);
- ``hf_grouped``: the same with length-grouped batches (``train_sampling_strategy=
  "group_by_length"``, transformers 4's ``group_by_length=True``);
- ``tasklight``: ``python -m framework.train experiment=RECIPE data.path=DATA seed=S`` (plus
  ``data.max_train_samples=N`` with ``--train-samples``), nothing else changed: the default a
  user runs.

Recipes: ``sst2`` (GLUE SST-2, ``BertForSequenceClassification``, dev accuracy), ``conll2003``
(CoNLL-2003 NER, ``BertForTokenClassification``, first sub-token of each word labelled as in
run_ner.py, dev entity F1 by seqeval on word-level tags) and ``conll2003_pos`` (its POS column, the
same model class and alignment, dev word accuracy; tasklight windows a dev sentence longer than
``max_length``, the HF side truncates it and scores the words left). Both sides: all-MiniLM-L6-v2,
the same training examples (with ``--train-samples``, tasklight's own draw: ``Dataset.shuffle(seed)
.select(range(N))``), max length 128, and every hyperparameter read from the composed tasklight
recipe: batch size, epochs, learning rate with the recipe's head learning rate (x
``optim.head_lr_scale`` on the head), warm-up ratio then linear decay to 0, weight decay (not on
biases and LayerNorm), AdamW betas and eps (fused on both sides), gradient clipping, hidden,
attention and head dropout. The two sides cannot drift apart.

Timed span, both sides: each training batch from its start (after loading) to the end of its
optimizer step (tasklight: ``train_seconds`` in ``metrics.json``; HF: ``on_step_begin`` to
``on_step_end``); no validation or checkpoint writes inside it. The last output line is JSON.

    python bench/finetune_vs_hf.py --data DIR [--recipe sst2] [--train-samples 8000] [--seeds 0 1 2]

On a GPU (bench/gpu_check.sh): ``--overrides trainer=gpu`` (extra Hydra overrides, given to both
sides: the HF side reads the composed ``trainer.accelerator`` and ``trainer.precision``, so
``bf16-mixed`` becomes ``bf16=True``), and ``--init-random base`` to start both sides from the
same randomly initialised BERT-base-shaped checkpoint (written once to the work directory, the
recipe's tokenizer beside it) instead of the recipe's model; the heads start from each side's own
random init.
"""

from __future__ import annotations

import argparse
import functools
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
METRIC = {"sst2": ("val/acc", "dev_acc"), "conll2003": ("val/f1", "dev_f1"),
          "conll2003_pos": ("val/acc", "dev_word_acc")}  # fmt: skip


def recipe(name: str, data: Path, n: int | None, seed: int, extra: list[str]) -> list[str]:
    """The tasklight command's overrides: the recipe, data, subset and seed, then ``extra``."""
    limit = [f"data.max_train_samples={n}"] if n else []
    return [f"experiment={name}", f"data.path={data}", *limit, f"seed={seed}", *extra]


def _subset(ds, n: int | None, seed: int):
    return ds.shuffle(seed=seed).select(range(n)) if n and n < len(ds) else ds


def sst2_side(cfg, data: Path, n: int | None, seed: int, tokenizer):
    """(train, dev, model, metric) for SST-2."""
    from datasets import Dataset
    from transformers import BertForSequenceClassification

    from framework.readers import read_table

    d, t = cfg.data, cfg.task
    train = _subset(Dataset.from_dict(read_table(data / d.train_file)), n, seed)
    dev = Dataset.from_dict(read_table(data / d.val_file))

    def encode(rows):
        enc = tokenizer(rows[t.text_column], truncation=True, max_length=d.max_length)
        enc["labels"] = [int(x) for x in rows[t.label_column]]
        return enc

    cols = train.column_names
    train, dev = (s.map(encode, batched=True, remove_columns=cols) for s in (train, dev))
    model = BertForSequenceClassification.from_pretrained(
        cfg.model.name_or_path, num_labels=2, classifier_dropout=t.dropout, **_dropouts(cfg)
    )

    def metric(pred) -> float:
        return float((pred.predictions.argmax(-1) == pred.label_ids).mean())

    return train, dev, model, metric


def conll2003_side(cfg, data: Path, n: int | None, seed: int, tokenizer, pos: bool = False):
    """(train, dev, model, metric) for CoNLL-2003, as run_ner.py: first sub-token labelled.
    ``pos``: the POS column (the second), scored by word accuracy, labels the train split's."""
    import numpy as np
    from datasets import Dataset
    from seqeval.metrics import f1_score
    from transformers import BertForTokenClassification

    from tasks.ner import NER

    reader = NER(tokens_column="tokens", tags_column="tags", tag_field=1 if pos else -1)
    d = cfg.data
    train = _subset(Dataset.from_dict(reader.read_file(data / d.train_file)), n, seed)
    dev = Dataset.from_dict(reader.read_file(data / d.val_file))
    labels = ["O", *(f"{p}-{t}" for t in ("LOC", "MISC", "ORG", "PER") for p in "BI")]
    if pos:
        labels = sorted({t for tags in train["tags"] for t in tags})
    label_to_id = {tag: i for i, tag in enumerate(labels)}

    def align(batch):  # run_ner.py's tokenize_and_align_labels, label_all_tokens=False
        enc = tokenizer(
            batch["tokens"], is_split_into_words=True, truncation=True, max_length=d.max_length
        )
        enc["labels"] = []
        for i, tags in enumerate(batch["tags"]):
            prev, lab = None, []
            for w in enc.word_ids(i):
                lab.append(-100 if w is None or w == prev else label_to_id[tags[w]])
                prev = w
            enc["labels"].append(lab)
        return enc

    train, dev = (s.map(align, batched=True, remove_columns=["tokens", "tags"])
                  for s in (train, dev))  # fmt: skip
    model = BertForTokenClassification.from_pretrained(
        cfg.model.name_or_path,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id=label_to_id,
        classifier_dropout=cfg.task.dropout,
        **_dropouts(cfg),
    )

    def metric(pred) -> float:
        preds = np.argmax(pred.predictions, axis=-1)
        gold = [[labels[y] for y in row if y != -100] for row in pred.label_ids]
        guess = [
            [labels[x] for x, y in zip(p, row, strict=True) if y != -100]
            for p, row in zip(preds, pred.label_ids, strict=True)
        ]
        if pos:  # word accuracy: each word's first sub-token (words cut by truncation: none)
            pairs = [ab for g, p in zip(gold, guess, strict=True) for ab in zip(g, p, strict=True)]
            return sum(a == b for a, b in pairs) / len(pairs)
        return float(f1_score(gold, guess))

    return train, dev, model, metric


def _dropouts(cfg) -> dict:
    import torch

    m = cfg.model
    return {
        "dtype": torch.float32,  # fp32 parameters as tasklight's, whatever the checkpoint stores
        "attn_implementation": "sdpa",
        "attention_probs_dropout_prob": m.attention_dropout,
        "hidden_dropout_prob": 0.1 if m.hidden_dropout is None else m.hidden_dropout,
    }


def recipe_optimizer(model, cfg, n_train: int, head: tuple[str, ...]) -> tuple:
    """(fused AdamW, linear warm-up/decay schedule) as the composed recipe configures them: no
    decay on 1-d parameters, the parameters named ``head*`` at lr x ``optim.head_lr_scale``."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    o = cfg.optim
    groups = []
    for is_head in (False, True):
        lr = o.lr * (o.head_lr_scale if is_head else 1.0)
        params = [(k, p) for k, p in model.named_parameters() if k.startswith(head) == is_head]
        for decay in (True, False):
            ps = [p for _, p in params if (p.ndim > 1) == decay]
            groups.append({"params": ps, "lr": lr, "weight_decay": o.weight_decay if decay else 0})
    opt = torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps, fused=True)
    steps = -(-n_train // cfg.data.batch_size) * cfg.trainer.max_epochs
    return opt, get_linear_schedule_with_warmup(opt, int(o.warmup_ratio * steps), steps)


def step_timer():
    """A ``TrainerCallback`` summing each training step's seconds, from ``on_step_begin`` to
    ``on_step_end`` (the timed span of the HF-style sides)."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        seconds, steps, _start = 0.0, 0, 0.0

        def on_step_begin(self, args, state, control, **kw):
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.seconds += time.perf_counter() - self._start
            self.steps += 1

    return StepTimer()


def run_hf(
    name: str, data: Path, n: int | None, seed: int, group_by_length: bool, extra: list[str]
) -> dict:
    """One HF Trainer run in this process, configured from the composed tasklight recipe."""
    import torch
    from hydra import compose, initialize_config_dir
    from transformers import (
        AutoTokenizer,
        DataCollatorForTokenClassification,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from framework.config import register_resolvers

    register_resolvers()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train", overrides=[*recipe(name, data, n, seed, extra), "paths.output_dir=/tmp/x"]
        )
    d = cfg.data
    tokenizer = AutoTokenizer.from_pretrained(cfg.model.name_or_path)
    torch.manual_seed(seed)
    build = {"sst2": sst2_side, "conll2003": conll2003_side,
             "conll2003_pos": functools.partial(conll2003_side, pos=True)}[name]  # fmt: skip
    train, dev, model, metric = build(cfg, data, n, seed, tokenizer)
    collator = DataCollatorWithPadding if name == "sst2" else DataCollatorForTokenClassification
    # The recipe's parameter groups: no decay on 1-d parameters, the head at lr x head_lr_scale.
    opt, sched = recipe_optimizer(model, cfg, len(train), ("bert.pooler.", "classifier."))

    timer = step_timer()
    precision = str(cfg.trainer.precision)
    use_cpu = cfg.trainer.accelerator == "cpu" or not torch.cuda.is_available()
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
            use_cpu=use_cpu,
            bf16="bf16" in precision,
            fp16=precision.startswith("16"),
            disable_tqdm=True,
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=train,
            data_collator=collator(tokenizer),
            optimizers=(opt, sched),
            callbacks=[timer],
        )
        start = time.perf_counter()
        trainer.train()
        train_wall = time.perf_counter() - start
        score = metric(trainer.predict(dev))
    return {"train_seconds": round(timer.seconds, 3), "train_call_seconds": round(train_wall, 3),
            "steps": timer.steps, METRIC[name][1]: score}  # fmt: skip


def run_tasklight(
    name: str, data: Path, n: int | None, seed: int, workdir: Path, extra: list[str]
) -> dict:
    run_dir = workdir / f"tasklight-{name}-seed{seed}"
    cmd = [sys.executable, "-m", "framework.train", *recipe(name, data, n, seed, extra),
           f"hydra.run.dir={run_dir}"]  # fmt: skip
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    key, out = METRIC[name]
    return {"train_seconds": metrics["train_seconds"], "fit_seconds": metrics["fit_seconds"],
            out: metrics[key]}  # fmt: skip


def child(
    name: str, side: str, data: Path, n: int | None, seed: int, workdir: Path, extra: list[str]
) -> dict:
    """Run one side in a child process (its peak RSS is its own)."""
    cmd = [sys.executable, __file__, "--one", side, "--recipe", name, "--data", str(data),
           "--seeds", str(seed), "--workdir", str(workdir)]  # fmt: skip
    cmd += ["--train-samples", str(n)] if n else []
    cmd += [f"--overrides={o}" for o in extra]
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    if proc.returncode:
        raise SystemExit(f"{side} seed {seed} failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def random_checkpoint(name: str, preset_name: str, workdir: Path) -> Path:
    """A randomly initialised ``BertModel`` of the preset's shape (seed 0), saved with the
    recipe's tokenizer: the same starting encoder for both sides."""
    import torch
    from hydra import compose, initialize_config_dir
    from transformers import AutoTokenizer, BertConfig, BertModel

    from framework.config import register_resolvers
    from framework.convert import config_to_hf
    from framework.presets import preset

    register_resolvers()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={name}", "paths.output_dir=/tmp/x"])
    tokenizer = AutoTokenizer.from_pretrained(cfg.model.name_or_path)
    out = workdir / f"random-{preset_name}"
    torch.manual_seed(0)
    BertModel(
        BertConfig(**config_to_hf(preset(preset_name, vocab_size=len(tokenizer))))
    ).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def peak_rss_mib() -> float:
    """The peak RSS of this process or of its largest finished child (the tasklight run)."""
    import resource

    kib = max(resource.getrusage(who).ru_maxrss
              for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))  # fmt: skip
    return round(kib / 1024, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="the recipe's data folder")
    ap.add_argument("--recipe", choices=sorted(METRIC), default="sst2")
    ap.add_argument("--train-samples", type=int, default=None, help="default: the whole split")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    ap.add_argument("--workdir", type=Path, default=None, help="tasklight run dirs (default: tmp)")
    ap.add_argument("--overrides", action="append", default=[], help="Hydra override, both sides")
    ap.add_argument("--init-random", metavar="PRESET", help="both sides from this random encoder")
    ap.add_argument("--one", choices=SIDES, help=argparse.SUPPRESS)  # internal: one child run
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    data, n, name = a.data.resolve(), a.train_samples, a.recipe
    workdir = a.workdir or Path(tempfile.mkdtemp(prefix="finetune_vs_hf-"))
    score = METRIC[name][1]
    extra = list(a.overrides)
    if a.one:
        seed = a.seeds[0]
        if a.one == "tasklight":
            result = run_tasklight(name, data, n, seed, workdir, extra)
        else:
            result = run_hf(name, data, n, seed, a.one == "hf_grouped", extra)
        result["peak_rss_mib"] = peak_rss_mib()
        print(json.dumps(result))
        return
    import torch

    if a.init_random:
        extra.append(f"model.name_or_path={random_checkpoint(name, a.init_random, workdir)}")
    runs: dict[str, list[dict]] = {side: [] for side in a.sides}
    for seed in a.seeds:
        for side in a.sides:
            r = child(name, side, data, n, seed, workdir, extra)
            r["seed"] = seed
            runs[side].append(r)
            print(
                f"seed {seed} {side:11s} train_seconds {r['train_seconds']:8.1f}  {score} "
                f"{r[score]:.4f}  peak RSS {r.get('peak_rss_mib', 0):7.0f} MiB",
                flush=True,
            )
    summary = {}
    for side, rs in runs.items():
        summary[side] = {
            "train_seconds_mean": round(statistics.mean(r["train_seconds"] for r in rs), 2),
            f"{score}_mean": round(statistics.mean(r[score] for r in rs), 4),
            f"{score}_spread": round(max(r[score] for r in rs) - min(r[score] for r in rs), 4),
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
    print(json.dumps({"recipe": name, "train_samples": n, "seeds": a.seeds, "threads":
                      torch.get_num_threads(), "overrides": extra, "init_random": a.init_random,
                      "summary": summary, "runs": runs}))  # fmt: skip


if __name__ == "__main__":
    main()
