"""Does pretraining help? SST-2 fine-tunes from a pretraining run vs from random weights.

Runs the SST-2 command of the foundation issue (8,000 sentences, 1 epoch, batch 32) through the
entry point for each seed, twice: with ``model.init_from=RUN_DIR`` (the encoder of a pretraining
run) and with ``model=small`` (the same architecture, random weights). Both arms get the same
overrides: lr 3e-4 on encoder and head alike (at the recipe's 5e-5, one epoch moves neither a
barely pretrained nor a random encoder: both stayed at chance) and hidden dropout 0.1 (the
pretraining recipe trains without it, and init_from would carry its 0 over). Prints dev accuracy
per seed, the means and the spreads (max - min over seeds).

    python bench/finetune_from_pretraining.py --pretrained RUN_DIR --data ../shared/data/sst2 \\
        [--seeds 0 1 2] [--lr 3e-4] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def finetune(
    data: Path, model_args: list[str], seed: int, lr: str, extra: list[str], out: Path
) -> dict:
    args = [
        sys.executable, "-m", "framework.train", "experiment=sst2", f"data.path={data}",
        "data.max_train_samples=8000", "data.batch_size=32", f"optim.lr={lr}",
        "trainer.max_epochs=1", f"seed={seed}", "callbacks=none", f"hydra.run.dir={out}",
        *model_args, *extra,
    ]  # fmt: skip
    subprocess.run(args, cwd=ROOT, check=True, capture_output=True)
    m = json.loads((out / "metrics.json").read_text())
    return {"acc": m["val/acc"], "fit_seconds": m["fit_seconds"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--pretrained", type=Path, required=True, help="a pretraining run directory")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "sst2")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--lr", default="3e-4")
    same = ["optim.head_lr_scale=1", "model.hidden_dropout=0.1"]
    ap.add_argument("--set", nargs="*", default=same, help="more overrides, for both arms")
    a = ap.parse_args()
    arms = {
        "pretrained": [f"model.init_from={a.pretrained.resolve()}"],
        "random_init": ["model=small"],
    }
    results: dict[str, dict] = {arm: {} for arm in arms}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in a.seeds:
            for arm, model_args in arms.items():
                out = Path(tmp) / f"{arm}{seed}"
                r = finetune(a.data.resolve(), model_args, seed, a.lr, a.set, out)
                results[arm][seed] = r
                print(f"{arm} seed {seed}: dev acc {r['acc']:.4f} ({r['fit_seconds']:.0f} s)")
    summary = {}
    for arm, runs in results.items():
        accs = [r["acc"] for r in runs.values()]
        summary[arm] = {"mean": sum(accs) / len(accs), "spread": max(accs) - min(accs),
                        "accs": accs}  # fmt: skip
        print(f"{arm}: mean {summary[arm]['mean']:.4f}, spread {summary[arm]['spread']:.4f}")
    gap = summary["pretrained"]["mean"] - summary["random_init"]["mean"]
    spread = max(summary["pretrained"]["spread"], summary["random_init"]["spread"])
    print(f"gain {gap:+.4f} vs largest spread {spread:.4f}: "
          f"{'beats' if gap > spread else 'does not beat'} the spread")  # fmt: skip
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
