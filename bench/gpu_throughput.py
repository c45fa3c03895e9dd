"""GPU encoder throughput and MFU at bert-base shapes: tasklight unpadded (varlen FlashAttention)
vs tasklight padded (SDPA) vs transformers ``BertModel`` (SDPA, and FlashAttention-2 when the
flash-attn package is installed), bf16 autocast, forward + backward.

Random weights (the ``base`` preset), batches of 32 sequences with lengths drawn uniformly from
[16, 512] (seeded), the same batches and weights on every side. MFU = real tokens/s x 6 x
(non-embedding parameters) / the GPU's dense bf16 peak (``--peak-tflops``, H200/H100 SXM: 989);
attention-score FLOPs are not counted. ``varlen_calls`` says whether the varlen kernel ran.

    python bench/gpu_throughput.py [--steps 20] [--peak-tflops 989]
    python bench/gpu_throughput.py --device cpu --preset tiny --steps 1   # plumbing check only

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
    ap.add_argument("--device", default="cuda", help="cpu: a plumbing check, no real numbers")
    ap.add_argument("--preset", default="base")
    a = ap.parse_args()
    import importlib.util

    from transformers import BertConfig, BertModel

    import framework.attention as attention
    from framework.convert import config_to_hf, tasklight_to_hf
    from framework.encoder import Encoder
    from framework.presets import preset
    from framework.timing import gemm_flops_per_token

    dev = torch.device(a.device)
    assert dev.type != "cuda" or torch.cuda.is_available(), "needs a CUDA device"
    cfg = preset(a.preset, hidden_dropout=0.0)
    torch.manual_seed(0)
    ours = Encoder(cfg).to(dev).train()
    hf_models = {}
    impls = ["sdpa"] + (["flash_attention_2"] if importlib.util.find_spec("flash_attn") else [])
    for impl in impls:
        hf_config = BertConfig(**config_to_hf(cfg))
        hf_config._attn_implementation = impl
        theirs = BertModel(hf_config, add_pooling_layer=False)
        theirs.load_state_dict(tasklight_to_hf(ours.state_dict(), cfg))  # same weights
        hf_models[f"transformers_{impl}"] = theirs.to(dev).train()
    kernel = attention.VARLEN
    calls = []

    def counting(*args):
        calls.append(1)
        return kernel(*args)

    if kernel is not None:
        attention.VARLEN = counting
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(a.warmup + a.steps):
        lengths = torch.randint(16, 513, (a.batch_size,), generator=g)
        T = int(lengths.max())
        ids = torch.randint(1000, 30000, (a.batch_size, T), generator=g)
        mask = (torch.arange(T)[None] < lengths[:, None]).long()
        batches.append((ids.to(dev), mask.to(dev)))
    real = sum(int(m.sum()) for _, m in batches[a.warmup :])
    flops_per_token = gemm_flops_per_token(cfg)
    sides = {"tasklight_unpadded_varlen": ours, "tasklight_padded_sdpa": ours, **hf_models}

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    results = {}
    for side, model in sides.items():
        ours.unpad = side == "tasklight_unpadded_varlen"
        calls.clear()
        for step, (ids, mask) in enumerate(batches):
            if step == a.warmup:
                sync()
                start = time.perf_counter()
            model.zero_grad(set_to_none=True)
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                if model is ours:
                    out = ours(ids, mask)
                else:
                    out = model(input_ids=ids, attention_mask=mask).last_hidden_state
            out[mask.bool()].float().square().mean().backward()
        sync()
        seconds = time.perf_counter() - start
        tps = real / seconds
        results[side] = {
            "real_tokens_per_s": round(tps),
            "mfu": round(tps * flops_per_token / (a.peak_tflops * 1e12), 3),
            "varlen_calls": len(calls),
        }
        print(f"{side:26s} {tps:10.0f} real tok/s  MFU {results[side]['mfu']:.1%}", flush=True)
    name = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"
    print(json.dumps({"device": name, "preset": a.preset, "batch": a.batch_size,
                      "steps": a.steps, "results": results}))  # fmt: skip


if __name__ == "__main__":
    main()
