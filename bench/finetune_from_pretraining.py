"""Does pretraining help? SST-2 fine-tunes of two arms (e.g. from a pretraining run vs the same
architecture from random weights), 3 seeds each, through the entry point, in one invocation.

Each arm is a set of overrides added to the same command (``experiment=sst2`` on the first
``--train-samples`` sentences' seeded subset, ``--epochs`` epochs (1), plus ``--set``, the
overrides both arms share). Prints and writes (``--out``) dev accuracy per seed, the means,
the spreads (max - min over seeds) and whether the gain beats the larger spread.

    # wikitext-2 pretraining vs the same architecture and tokenizer from random weights
    python bench/finetune_from_pretraining.py --data ../shared/data/sst2 \\
        --arm pretrained="model.init_from=RUN_DIR" \\
        --arm random_init="model.init_from=RUN_DIR model.from_scratch=true" \\
        --set optim.lr=3e-4 optim.head_lr_scale=1 model.hidden_dropout=0.1
    # continued pretraining of MiniLM on SST-2 text vs fine-tuning MiniLM directly
    python bench/finetune_from_pretraining.py --data ../shared/data/sst2 --train-samples 2000 \\
        --arm continued="model.init_from=DAPT_RUN_DIR" --arm direct=""
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
    data: Path, samples: int, epochs: int, seed: int, overrides: list[str], out: Path
) -> dict:
    args = [
        sys.executable, "-m", "framework.train", "experiment=sst2", f"data.path={data}",
        f"data.max_train_samples={samples}", f"trainer.max_epochs={epochs}", f"seed={seed}",
        "callbacks=none", f"hydra.run.dir={out}", *overrides,
    ]  # fmt: skip
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    m = json.loads((out / "metrics.json").read_text())
    return {"acc": m["val/acc"], "train_seconds": m["train_seconds"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="folder with SST-2's GLUE TSV files")
    ap.add_argument("--arm", action="append", required=True, help="NAME=OVERRIDES (twice)")
    ap.add_argument("--train-samples", type=int, default=8000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--set", nargs="*", default=[], help="overrides both arms share")
    ap.add_argument("--out", type=Path, help="write the results here (JSON)")
    a = ap.parse_args()
    arms = {name: over.split() for name, _, over in (arm.partition("=") for arm in a.arm)}
    if len(arms) != 2:
        raise SystemExit("give two --arm NAME=OVERRIDES")
    results: dict[str, list[dict]] = {arm: [] for arm in arms}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in a.seeds:
            for arm, overrides in arms.items():
                out = Path(tmp) / f"{arm}{seed}"
                over = [*overrides, *a.set]
                r = finetune(a.data.resolve(), a.train_samples, a.epochs, seed, over, out)
                results[arm].append({"seed": seed, **r})
                print(f"{arm} seed {seed}: dev acc {r['acc']:.4f} ({r['train_seconds']:.0f} s)")
    summary = {"command": sys.argv[1:], "arms": {}}
    for arm, runs in results.items():
        accs = [r["acc"] for r in runs]
        summary["arms"][arm] = {"runs": runs, "mean": sum(accs) / len(accs),
                                "spread": max(accs) - min(accs)}  # fmt: skip
        s = summary["arms"][arm]
        print(f"{arm}: mean {s['mean']:.4f}, spread {s['spread']:.4f}")
    (first, a_), (second, b_) = summary["arms"].items()
    gap, spread = a_["mean"] - b_["mean"], max(a_["spread"], b_["spread"])
    summary["gain"], summary["largest_spread"] = gap, spread
    print(f"{first} - {second}: {gap:+.4f} vs largest spread {spread:.4f}: "
          f"{'beats' if gap > spread else 'does not beat'} the spread")  # fmt: skip
    if a.out:
        a.out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
