"""Where a training step's time goes: torch profiler over N steps of a real training run.

Builds the run exactly as ``python -m framework.train OVERRIDES`` does (same config, module, data,
callbacks and loggers; validation off so that the profiled span is training only), skips
``--warmup`` steps, then profiles ``--steps`` optimizer steps and splits their wall time into:

- GEMMs (``aten::mm``/``addmm``/``bmm``), attention (SDPA and its backward), embedding backward,
  LayerNorm, GELU, dropout, other aten ops inside forward/backward (self CPU time of each op);
- optimizer step, zero_grad and gradient clipping (their inclusive time);
- everything else: Python, Lightning and logging overhead, data loading and collation (wall time
  of the span minus all of the above).

    python bench/profile_train.py --steps 200 -- experiment=sst2 data.path=DIR \
        data.max_train_samples=2000

The last output line is JSON (seconds per category and per step).
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

GEMM = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")
BUCKETS = {  # category: op-name fragments (self CPU time; first match wins)
    "gemm": GEMM,
    "attention": ("scaled_dot_product", "_softmax", "flash_attention"),
    "embedding_backward": ("embedding_dense_backward", "embedding_backward"),
    "layer_norm": ("layer_norm",),
    "gelu": ("gelu",),
    "dropout": ("dropout", "bernoulli"),
}
# Inclusive spans recorded by ``record_function``: torch's own for zero_grad; ours for the
# optimizer's update (Lightning runs forward and backward inside ``optimizer.step(closure)``:
# the closure is called first, outside the span) and for gradient clipping.
SPANS = {"optimizer_update": "optimizer_update", "zero_grad": "Optimizer.zero_grad#",
         "grad_clipping": "clip_gradients"}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=200, help="profiled optimizer steps")
    ap.add_argument("--warmup", type=int, default=10, help="steps before profiling starts")
    ap.add_argument("--out", type=Path, default=Path("/tmp/tasklight-profile"))
    ap.add_argument("--top", type=int, default=0, help="also list the N costliest ops")
    ap.add_argument("overrides", nargs="*", help="framework.train overrides")
    a = ap.parse_args()

    import hydra
    import lightning as L
    from hydra import compose, initialize_config_dir

    from framework.build import build
    from framework.config import register_resolvers
    from framework.loggers import instantiate_all

    register_resolvers()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                *a.overrides,
                f"paths.output_dir={a.out}",
                f"trainer.max_steps={a.warmup + a.steps}",
                "trainer.max_epochs=-1",
                "+trainer.limit_val_batches=0",
                "trainer.num_sanity_val_steps=0",
            ],
        )
    L.seed_everything(cfg.seed)
    _, datamodule, module = build(cfg)

    clip = module.clip_gradients

    def traced_clip(*args, **kwargs):
        with torch.profiler.record_function("clip_gradients"):
            return clip(*args, **kwargs)

    module.clip_gradients = traced_clip
    configure = module.configure_optimizers

    def traced_optimizers():
        conf = configure()
        opt = conf["optimizer"]
        step = opt.step

        def traced_step(closure=None):
            with torch.enable_grad():
                loss = closure() if closure is not None else None
            with torch.profiler.record_function("optimizer_update"):
                step()
            return loss

        opt.step = traced_step
        return conf

    module.configure_optimizers = traced_optimizers
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
    span: dict[str, float] = {}

    class Window(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == a.warmup and "start" not in span:
                prof.start()
                span["start"] = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == a.warmup + a.steps and "end" not in span:
                span["end"] = time.perf_counter()
                prof.stop()

    callbacks = [*instantiate_all(cfg.get("callbacks")), Window()]
    trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=callbacks, logger=instantiate_all(cfg.get("logger"))
    )
    trainer.fit(module, datamodule=datamodule)
    wall = span["end"] - span["start"]

    seconds = dict.fromkeys([*BUCKETS, "other_aten"], 0.0)
    spans = dict.fromkeys(SPANS, 0.0)
    per_op: dict[str, float] = {}

    def span_of(e) -> str | None:
        return next((cat for cat, prefix in SPANS.items() if e.name.startswith(prefix)), None)

    for e in prof.events():
        cat = span_of(e)
        if cat is not None:
            spans[cat] += e.cpu_time_total / 1e6
            continue
        if not e.name.startswith("aten::"):
            continue
        parent, enclosed = e.cpu_parent, False
        while parent is not None and not enclosed:
            enclosed = parent.name.startswith("aten::") or span_of(parent) is not None
            parent = parent.cpu_parent
        if enclosed:  # inside another aten op (counted there) or inside a span
            continue
        t = e.cpu_time_total / 1e6  # a top-level aten op: its whole time, children included
        per_op[e.name] = per_op.get(e.name, 0.0) + t
        cat = next((c for c, names in BUCKETS.items() if any(n in e.name for n in names)), None)
        if cat is None:
            cat = "gemm" if any(n in e.name for n in ("linear", "matmul")) else "other_aten"
        seconds[cat] += t
    seconds.update(spans)
    seconds["python_lightning_data_other"] = max(0.0, wall - sum(seconds.values()))
    rows = sorted(seconds.items(), key=lambda kv: -kv[1])
    print(f"{'category':28s} {'seconds':>8s} {'share':>6s} {'ms/step':>8s}")
    for cat, s in rows:
        print(f"{cat:28s} {s:8.2f} {s / wall:6.1%} {1000 * s / a.steps:8.1f}")
    print(f"{'wall':28s} {wall:8.2f} {1:6.1%} {1000 * wall / a.steps:8.1f}")
    for op, t in sorted(per_op.items(), key=lambda kv: -kv[1])[: a.top]:
        print(f"  {op:40s} {1000 * t / a.steps:8.2f} ms/step")
    print(json.dumps({"steps": a.steps, "wall_s": round(wall, 3),
                      "seconds": {k: round(v, 3) for k, v in seconds.items()},
                      "overrides": a.overrides}))  # fmt: skip


if __name__ == "__main__":
    main()
