"""Are a pretraining run's frozen features better than random ones for SST-2? A linear probe.

Encodes seeded SST-2 train sentences and the dev set with a run's exported encoder and with the
same architecture from random weights (seeded), both frozen, and fits a logistic regression
(scikit-learn) on the mean of the token outputs and on the [CLS] output. Prints dev accuracy
per encoder and pooling; the last output line is JSON. Fine-tuning changes the features; this
measures what pretraining put into them before it does.

    python bench/probe_frozen.py --data ../shared/data/sst2 --run RUN_DIR
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch
from sklearn.linear_model import LogisticRegression
from transformers import AutoTokenizer

from framework.encoder import Encoder
from framework.pretrained import load_pretrained
from framework.readers import read_table


def read_sst2(path: Path) -> tuple[list[str], list[int]]:
    rows = read_table(path)  # GLUE's TSV: a header line, bare quotes
    return rows["sentence"], [int(y) for y in rows["label"]]


@torch.no_grad()
def features(encoder: Encoder, tokenizer, texts: list[str]) -> dict[str, torch.Tensor]:
    """(N, H) mean-pooled and [CLS] outputs of the frozen encoder."""
    means, cls = [], []
    for i in range(0, len(texts), 128):
        enc = tokenizer(texts[i : i + 128], padding=True, truncation=True, max_length=128,
                        return_tensors="pt")  # fmt: skip
        hidden = encoder(enc["input_ids"], enc["attention_mask"])  # (B, T, H)
        mask = enc["attention_mask"][..., None]
        means.append((hidden * mask).sum(1) / mask.sum(1))
        cls.append(hidden[:, 0])
    return {"mean": torch.cat(means), "cls": torch.cat(cls)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="SST-2's GLUE TSV folder")
    ap.add_argument("--run", type=Path, required=True, help="a pretraining run (its export/)")
    ap.add_argument("--train-samples", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    export = a.run / "export"
    tokenizer = AutoTokenizer.from_pretrained(export)
    train_x, train_y = read_sst2(a.data / "train.tsv")
    pick = random.Random(a.seed).sample(range(len(train_x)), a.train_samples)
    train_x, train_y = [train_x[i] for i in pick], [train_y[i] for i in pick]
    dev_x, dev_y = read_sst2(a.data / "dev.tsv")
    pretrained, _ = load_pretrained(str(export))
    torch.manual_seed(a.seed)
    encoders = {"pretrained": pretrained, "random_weights": Encoder(pretrained.cfg)}
    results: dict[str, dict[str, float]] = {}
    for name, encoder in encoders.items():
        encoder.eval()
        train_f, dev_f = features(encoder, tokenizer, train_x), features(encoder, tokenizer, dev_x)
        results[name] = {}
        for pooling in ("mean", "cls"):
            probe = LogisticRegression(max_iter=2000).fit(train_f[pooling].numpy(), train_y)
            acc = probe.score(dev_f[pooling].numpy(), dev_y)
            results[name][pooling] = acc
            print(f"{name:15s} {pooling:4s} dev acc {acc:.4f}")
    print(json.dumps({"run": str(a.run), "train_samples": a.train_samples, "seed": a.seed,
                      "dev_samples": len(dev_x), "probe_dev_acc": results}))  # fmt: skip


if __name__ == "__main__":
    main()
