"""Run every command of README.md's ``bash`` blocks, as written, in the order written.

    python .ci/readme_commands.py [--out readme_commands.json] [--skip-slow]

Run it from the root of a fresh clone (``../shared/data`` beside it for the recipes): it runs
``make train`` first (which installs ``.venv``), then each command with ``.venv/bin`` first on
``PATH`` and ``HF_HUB_OFFLINE=1``. Placeholders get real values: ``RUN_DIR`` is the run
directory the quickstart printed (for ``model.init_from=RUN_DIR``: the one the pretraining
recipe printed), ``DIR/NAME`` the data set NAME in ``../shared/data``, a bare ``DIR`` a folder
holding ``other_dev.tsv`` (the quickstart dev set as TSV),
``new.jsonl`` two sentences, ``my_data`` a small JSON-lines set with ``review``/``stars`` columns.
Commands that need what an offline CPU machine lacks (a CUDA wheel from download.pytorch.org)
are listed as skipped with the reason; ``make test`` is what ``.ci/run`` runs. Each command's
exit status, seconds and last output line go to ``--out``; the exit status is 1 when one command
failed unexpectedly.

Long: every recipe trains in full (hours on a small CPU machine), so it is not part of CI.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = {
    "--index-url https://download.pytorch.org": "the CUDA wheel needs download.pytorch.org",
    "make test": "run by .ci/run on the same fresh clone",
}
# Commands expected to fail on a machine without a GPU, with the error they must print.
EXPECTED_ERROR = {"trainer=gpu": "error:"}
SLOW = ("experiment=", "hparams_search=", "squad_split")


def readme_commands() -> list[str]:
    """The command lines of README.md's ``bash`` blocks (comments and blank lines dropped)."""
    text = (ROOT / "README.md").read_text()
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def fixtures(tmp: Path) -> dict[str, Path]:
    """Inputs the placeholders stand for."""
    dev = list(csv.DictReader((ROOT / "data/quickstart/dev.csv").open()))
    other = tmp / "other"
    other.mkdir()
    with (other / "other_dev.tsv").open("w", newline="") as f:
        w = csv.DictWriter(f, ["text", "label"], delimiter="\t")
        w.writeheader()
        w.writerows(dev[:40])
    new = tmp / "new.jsonl"
    new.write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in dev[:2]))
    my = tmp / "my_data"
    my.mkdir()
    train = list(csv.DictReader((ROOT / "data/quickstart/train.csv").open()))
    stars = {"positive": 5, "negative": 1}
    for name, rows in (("train.jsonl", train[:120]), ("dev.jsonl", dev[:40])):
        with (my / name).open("w") as f:
            for r in rows:
                f.write(json.dumps({"review": r["text"], "stars": stars[r["label"]]}) + "\n")
    return {"DIR": other, "new.jsonl": new, "my_data": my}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("readme_commands.json"))
    ap.add_argument("--skip-slow", action="store_true", help="skip the recipes and the sweep")
    a = ap.parse_args()
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env["PATH"] = f"{ROOT / '.venv/bin'}{os.pathsep}{env['PATH']}"
    tmp = Path(tempfile.mkdtemp(prefix="readme-"))
    fix = fixtures(tmp)
    runs: dict[str, str] = {}
    results = []
    commands = ["make train", *readme_commands()]
    for i, line in enumerate(commands):
        reason = next((why for key, why in SKIP.items() if key in line), None)
        if a.skip_slow and any(key in line for key in SLOW):
            reason = "--skip-slow"
        if reason:
            results.append({"command": line, "skipped": reason})
            print(f"[{i}] skipped ({reason}): {line}", flush=True)
            continue
        cmd = line
        if "RUN_DIR" in line:
            cmd = line.replace("RUN_DIR", runs["pretrain" if "init_from" in line else "quickstart"])
        # DIR/NAME in a recipe: the data set NAME in ../shared/data (bare DIR: the fixture).
        cmd = re.sub(r"(?<=[=\s])DIR/", f"{ROOT.parent / 'shared' / 'data'}/", cmd)
        for name, path in fix.items():
            cmd = re.sub(rf"(?<=[=\s]){re.escape(name)}(?=[\s/]|$)", str(path), cmd)
        start = time.perf_counter()
        proc = subprocess.run(cmd, shell=True, cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = round(time.perf_counter() - start, 1)
        error = (proc.stderr.strip().splitlines() or [""])[-1]
        # the last line of stdout (a run directory, a metric), else of stderr (an error)
        out = (proc.stdout.strip() or proc.stderr.strip()).splitlines()
        last = error if proc.returncode else (out[-1] if out else "")
        expected = next((e for key, e in EXPECTED_ERROR.items() if key in line), None)
        ok = proc.returncode != 0 and expected in error if expected else proc.returncode == 0
        if proc.returncode == 0 and (line == "make train" or "experiment=pretrain" in line):
            runs["quickstart" if line == "make train" else "pretrain"] = proc.stdout.split()[-1]
        results.append(
            {
                "command": line,
                "ran": cmd,
                "exit": proc.returncode,
                "ok": ok,
                "seconds": seconds,
                "last_line": last,
            }
        )
        print(f"[{i}] {'ok' if ok else 'FAILED'} exit {proc.returncode} {seconds}s: {line}\n"
              f"     {last[:200]}", flush=True)  # fmt: skip
    a.out.write_text(json.dumps(results, indent=1) + "\n")
    failed = [r["command"] for r in results if r.get("ok") is False]
    print(f"{len(results)} commands, {len(failed)} failed" + "".join(f"\n  {c}" for c in failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
