"""GPU encoder throughput and MFU at bert-base shapes: tasklight unpadded (varlen FlashAttention)
vs tasklight padded (SDPA) vs transformers ``BertModel`` (SDPA), bf16 autocast, forward + backward.

Random weights (the ``base`` preset), batches of 32 sequences with lengths drawn uniformly from
[16, 512] (seeded), the same batches on every side. MFU = real tokens/s x 6 x (non-embedding
parameters) / the GPU's dense bf16 peak (``--peak-tflops``, H200/H100 SXM: 989).

    python bench/gpu_throughput.py [--steps 20] [--peak-tflops 989]

The last output line is JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    a = ap.parse_args()
    from transformers import BertConfig, BertModel

    from framework.convert import config_to_hf, tasklight_to_hf
    from framework.encoder import Encoder, preset

    assert torch.cuda.is_available(), "needs a CUDA device"
    cfg = preset("base", hidden_dropout=0.0)
    torch.manual_seed(0)
    ours = Encoder(cfg).cuda().train()
    hf_config = BertConfig(**config_to_hf(cfg))
    hf_config._attn_implementation = "sdpa"
    theirs = BertModel(hf_config, add_pooling_layer=False)
    theirs.load_state_dict(tasklight_to_hf(ours.state_dict(), cfg.num_layers))  # same weights
    theirs = theirs.cuda().train()
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(a.warmup + a.steps):
        lengths = torch.randint(16, 513, (a.batch_size,), generator=g)
        T = int(lengths.max())
        ids = torch.randint(1000, 30000, (a.batch_size, T), generator=g)
        mask = (torch.arange(T)[None] < lengths[:, None]).long()
        batches.append((ids.cuda(), mask.cuda()))
    real = sum(int(m.sum()) for _, m in batches[a.warmup :])
    per_layer = 4 * cfg.hidden_size**2 + 2 * cfg.hidden_size * cfg.intermediate_size
    flops_per_token = 6 * cfg.num_layers * per_layer  # forward + backward, GEMMs only
    sides = {
        "tasklight_unpadded_varlen": lambda i, m: ours(i, m),
        "tasklight_padded_sdpa": lambda i, m: ours(i, m),
        "transformers_sdpa": lambda i, m: theirs(input_ids=i, attention_mask=m).last_hidden_state,
    }
    results = {}
    for side, run in sides.items():
        ours.unpad = side == "tasklight_unpadded_varlen"
        model = theirs if side.startswith("transformers") else ours
        for step, (ids, mask) in enumerate(batches):
            if step == a.warmup:
                torch.cuda.synchronize()
                start = time.perf_counter()
            model.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = run(ids, mask)
            out[mask.bool()].float().square().mean().backward()
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        tps = real / seconds
        results[side] = {
            "real_tokens_per_s": round(tps),
            "mfu": round(tps * flops_per_token / (a.peak_tflops * 1e12), 3),
        }
        print(f"{side:26s} {tps:10.0f} real tok/s  MFU {results[side]['mfu']:.1%}", flush=True)
    print(json.dumps({"device": torch.cuda.get_device_name(), "batch": a.batch_size,
                      "steps": a.steps, "results": results}))  # fmt: skip


if __name__ == "__main__":
    main()
