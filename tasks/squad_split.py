"""``python -m tasks.squad_split FILE OUT_DIR [--dev-articles N] [--seed S]``: a SQuAD file's
articles as ``train.json`` and ``dev.json`` in OUT_DIR, no article in both (questions of one
article share their paragraphs, so a split by question would leak them)."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from framework.errors import UserError, print_error
from framework.readers import read_utf8


def split_by_article(path: Path, out_dir: Path, dev_articles: int, seed: int) -> None:
    """Write ``train.json`` and ``dev.json``: a seeded choice of ``dev_articles`` articles in
    dev, the others in train."""
    data = json.loads(read_utf8(path))
    articles = list(data["data"])
    if not 0 < dev_articles < len(articles):
        raise UserError(f"--dev-articles must be in [1, {len(articles) - 1}]")
    chosen = set(random.Random(seed).sample(range(len(articles)), dev_articles))
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, keep in (("train", False), ("dev", True)):
        part = [a for i, a in enumerate(articles) if (i in chosen) == keep]
        doc = {"data": part, "version": data.get("version", "1.1")}
        (out_dir / f"{name}.json").write_text(json.dumps(doc))
        questions = sum(len(p["qas"]) for a in part for p in a["paragraphs"])
        print(f"{out_dir / f'{name}.json'}: {len(part)} articles, {questions} questions")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m tasks.squad_split", description="split a SQuAD file by article"
    )
    parser.add_argument("file", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--dev-articles", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        split_by_article(args.file, args.out_dir, args.dev_articles, args.seed)
    except UserError as e:
        print_error(e)
        sys.exit(2)
