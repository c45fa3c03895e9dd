"""Record one stage of bench/gpu_check.sh in its results file (written atomically after each
stage, so a run cut short still returns every finished stage).

    python bench/device/collect.py RESULTS.json STAGE EXIT_CODE SECONDS LOG

The stage's result is the last line of its log that parses as a JSON object (the bench scripts
print one); pytest stages are summarised from their last line ("3 passed, 1 skipped in 4.2s").
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path


def last_json(lines: list[str]) -> dict | None:
    for line in reversed(lines):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def pytest_counts(lines: list[str]) -> dict | None:
    for line in reversed(lines):
        found = re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed)", line)
        if found:
            return {kind: int(n) for n, kind in found}
    return None


def record(results: Path, stage: str, code: int, seconds: int, log: Path) -> dict:
    lines = log.read_text(errors="replace").splitlines() if log.is_file() else []
    entry = {"exit_code": code, "seconds": seconds, "timed_out": code in (124, 137)}
    parsed = last_json(lines)
    if parsed is not None:
        entry["result"] = parsed
    counts = pytest_counts(lines)
    if counts is not None and parsed is None:
        entry["tests"] = counts
    if code and lines:
        entry["last_lines"] = lines[-5:]
    data = json.loads(results.read_text()) if results.is_file() else {}
    data[stage] = entry
    tmp = results.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, results)
    return entry


if __name__ == "__main__":
    path, stage, code, seconds, log = sys.argv[1:6]
    e = record(Path(path), stage, int(code), int(seconds), Path(log))
    status = "timed out" if e["timed_out"] else ("ok" if not e["exit_code"] else "FAILED")
    print(f"[{stage}] {status} (exit {code}, {seconds} s)")
