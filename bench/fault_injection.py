"""Fault injection: SIGKILL a training run at random points, resume it each time, compare.

Trains a small deterministic CPU run (tiny encoder, the quickstart data, dropout on, a
checkpoint every few steps) once without interruption, then again through the entry point,
killing it with SIGKILL at ``--kills`` random points, one of them in the middle of a checkpoint
save, and restarting the same command with ``resume=auto`` after each kill. Every resume must
finish, and the final weights and metrics must equal the uninterrupted run's.

    python bench/fault_injection.py [--kills 5] [--seed 0] [--out DIR]

To kill inside a save, the run of that kill goes through this script's ``--child`` mode, which
slows the checkpoint writer down (it writes in chunks, with pauses) and marks when a write is in
progress; nothing in tasklight itself knows about the test.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN = (
    "model=tiny", "callbacks=none", "trainer.accelerator=cpu", "trainer.max_epochs=3",
    "trainer.num_sanity_val_steps=0", "data.batch_size=16",
    "callbacks.step_checkpoint.every_n_train_steps=5",
)  # fmt: skip
SAVING = "TASKLIGHT_BENCH_SAVING_MARKER"  # env: the child marks writes in progress there


def child(argv: list[str]) -> None:
    """The entry point, with a slow checkpoint writer that marks each write in progress."""
    import io

    import torch

    from framework import checkpoint, train

    marker = Path(os.environ[SAVING])

    def slow_write(self, ckpt, f):
        buf = io.BytesIO()
        torch.save(ckpt, buf)
        data = buf.getvalue()
        marker.touch()
        for i in range(0, len(data), len(data) // 20 + 1):
            f.write(data[i : i + len(data) // 20 + 1])
            time.sleep(0.05)
        marker.unlink(missing_ok=True)

    checkpoint.AtomicCheckpointIO._write = slow_write
    sys.argv = [sys.argv[0], *argv]
    train.main()


def _cmd(run_dir: Path, via_child: bool = False) -> list[str]:
    args = [*RUN, f"hydra.run.dir={run_dir}", "resume=auto"]
    if via_child:
        return [sys.executable, str(Path(__file__).resolve()), "--child", *args]
    return [sys.executable, "-m", "framework.train", *args]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **extra}


def _final_state(run_dir: Path) -> tuple[dict, dict]:
    import torch

    metrics = json.loads((run_dir / "metrics.json").read_text())
    last = max((run_dir / "checkpoints").glob("step*.ckpt"), key=lambda p: int(p.stem[4:]))
    state = torch.load(last, map_location="cpu", weights_only=False)
    return {k: v for k, v in metrics.items() if k.startswith("val/")}, state


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="keep the runs here (default: temp)")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    out = a.out or Path(tempfile.mkdtemp(prefix="fault_injection_"))
    ref_dir, run_dir = out / "uninterrupted", out / "interrupted"

    start = time.perf_counter()
    subprocess.run(_cmd(ref_dir), cwd=ROOT, env=_env(), check=True, capture_output=True)
    ref_seconds = time.perf_counter() - start
    print(f"uninterrupted run: {ref_seconds:.1f} s")

    # Kill points: after random checkpoints (every 5 of the 60 steps) plus a random fraction of
    # a second, so that kills land anywhere in a step; one kill lands inside a save.
    # (no step checkpoint follows an epoch's last batch: steps 20 and 40 have none)
    targets = sorted(rng.sample([s for s in range(5, 60, 5) if s % 20], a.kills))
    save_kill = rng.randrange(a.kills)
    events = []
    marker = out / "saving"
    for n, target in enumerate(targets):
        in_save = n == save_kill
        proc = subprocess.Popen(
            _cmd(run_dir, via_child=in_save), cwd=ROOT, env=_env(**{SAVING: str(marker)}),
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        t0 = time.perf_counter()
        reached = run_dir / "checkpoints" / f"step{target}.ckpt"
        while proc.poll() is None and not reached.exists():
            time.sleep(0.01)
        if in_save:  # the next save after the target: kill while it writes
            while proc.poll() is None and not marker.exists():
                time.sleep(0.005)
            time.sleep(0.2)
        else:
            time.sleep(rng.uniform(0.0, 0.5))
        if proc.poll() is not None:
            raise SystemExit(f"the run ended before kill {n + 1}: {proc.returncode}")
        during_save = marker.exists()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        marker.unlink(missing_ok=True)
        resumed = next(
            (ln.split()[-1] for ln in proc.stdout.read().splitlines() if "Resuming" in ln), None
        )
        events.append({
            "after_checkpoint": f"step{target}", "after_s": round(time.perf_counter() - t0, 1),
            "during_save": during_save, "resumed_from": resumed and Path(resumed).name,
        })  # fmt: skip
        print(f"kill {n + 1}: {events[-1]}")

    final = subprocess.run(_cmd(run_dir), cwd=ROOT, env=_env(), capture_output=True, text=True)
    if final.returncode != 0:
        raise SystemExit(f"the last resume failed:\n{final.stderr[-3000:]}")
    last_resume = next(
        (ln.split()[-1] for ln in final.stdout.splitlines() if "Resuming" in ln), None
    )
    print(f"final run: resumed from {last_resume and Path(last_resume).name}, ran to the end")
    import torch

    ref_metrics, ref_state = _final_state(ref_dir)
    metrics, state = _final_state(run_dir)
    # Every checkpoint both runs wrote under the same name (newest step, best) holds the same
    # weights; the final metrics come from the best one after the last step.
    common = sorted({p.name for p in (ref_dir / "checkpoints").glob("*.ckpt")}
                    & {p.name for p in (run_dir / "checkpoints").glob("*.ckpt")})  # fmt: skip
    diff, compared = 0.0, []
    for name in common:
        x = torch.load(ref_dir / "checkpoints" / name, weights_only=False)
        y = torch.load(run_dir / "checkpoints" / name, weights_only=False)
        if x["global_step"] != y["global_step"]:  # last.ckpt follows the runs' best saves
            continue
        compared.append(f"{name} (step {x['global_step']})")
        x, y = x["state_dict"], y["state_dict"]
        diff = max(diff, *((x[k] - y[k]).abs().max().item() for k in x))
    same_step = ref_state["global_step"] == state["global_step"]
    ok = same_step and diff == 0.0 and metrics == ref_metrics
    result = {
        "kills": events, "compared_checkpoints": compared, "max_weight_diff": diff,
        "newest_step_checkpoint": state["global_step"],
        "metrics_uninterrupted": ref_metrics, "metrics_resumed": metrics, "equal": ok,
    }  # fmt: skip
    (out / "fault_injection.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"{'PASS' if ok else 'FAIL'}: runs in {out}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.path.insert(0, str(ROOT))
        child(sys.argv[2:])
    else:
        main()
