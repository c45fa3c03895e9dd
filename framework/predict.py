"""``python -m framework.predict run=RUN_DIR input=FILE [output=FILE]``: predictions of a trained
run on new inputs, as JSON lines in input order.

``input``: a CSV, TSV or JSON-lines file with the task's input columns (or a file in the task's
own format), or ``-`` for standard input: one text per line (a sentence pair: the two texts
separated by a tab; NER: words separated by spaces; masked LM: text with [MASK] tokens), or one
JSON object per line. Each output line is ``{"id": ..., <the task's record>}``: the input's
``id`` column when it has one, else the row's index. The weights are the run's best checkpoint
(``ckpt=FILE`` for another); batches are sorted by length and unpadded, as in evaluation.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from framework.errors import UserError, print_error
from framework.fileio import is_inside, write_atomic

USAGE = "python -m framework.predict run=RUN_DIR input=FILE|- [output=FILE] [ckpt=FILE]"


def read_stdin(task: Any) -> dict[str, list]:
    """Rows from standard input: a JSON object or the task's plain-text row, per line."""
    records = []
    for n, line in enumerate(sys.stdin.read().splitlines(), 1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise UserError(f"stdin line {n}: not a JSON object ({e.msg})") from None
        else:
            records.append(task.text_row(line))
    columns = list(dict.fromkeys(k for r in records for k in r))
    return {c: [r.get(c) for r in records] for c in columns}


def check_output(output: str | None, input_: str, run_dir: Path, ckpt: str | None) -> Path | None:
    """The output file, checked before any inference: its folder exists, it is not a folder,
    not the input or the checkpoint (which writing it would destroy), and not inside the run's
    directory (whose files it could replace: a checkpoint, ``config.yaml``, ``metrics.json``)."""
    if not output:
        return None
    path = Path(output)
    if path.is_dir():
        raise UserError(
            f"output={output} is a folder; name a file, e.g. output={path}/predictions.jsonl"
        )
    if not path.parent.is_dir():
        raise UserError(f"the folder of output={output} does not exist; create {path.parent} first")
    if not os.access(path.parent, os.W_OK):
        raise UserError(f"cannot write in {path.parent} (output={output}); choose another output")
    for what, other in (("input", input_), ("checkpoint", ckpt)):
        if other and other != "-" and path.exists() and Path(other).exists():
            if path.samefile(other):
                raise UserError(f"output={output} is the {what} file; name another output file")
    if is_inside(path, run_dir):
        raise UserError(
            f"output={output} is inside the run directory {run_dir}, whose files it could "
            "replace; write the predictions elsewhere (e.g. output=predictions.jsonl)"
        )
    return path


def predict(args: dict[str, Any], overrides: list[str]) -> list[dict[str, Any]]:
    """The records, in input order (also written to ``output`` or stdout)."""
    from framework.data import DataModule
    from framework.runs import inference_trainer, load_run, run_config, task_packages

    run_dir = Path(args["run"])
    output = check_output(args.get("output"), args["input"], run_dir, args.get("ckpt"))
    cfg = run_config(run_dir, overrides)
    tokenizer, module = load_run(
        run_dir, cfg, args.get("ckpt"), task_packages(args["task_packages"])
    )
    data_args = OmegaConf.to_container(cfg.data, resolve=True)
    datamodule = DataModule(module.task, tokenizer, seed=cfg.seed, **data_args)
    if args["input"] == "-":
        rows = read_stdin(module.task)
    else:
        rows = datamodule.read_file(Path(args["input"]))
    loader = datamodule.predict_loader(rows)
    trainer = inference_trainer(cfg, overrides)
    decoded = module.decode_predictions(trainer.predict(module, loader))
    n = len(next(iter(rows.values())))
    missing = [i for i in range(n) if i not in decoded]
    if missing:
        raise UserError(f"input row {missing[0] + 1} gave no prediction (no text in it?)")
    ids = rows.get("id") or list(range(n))
    records = [{"id": ids[i], **decoded[i]} for i in range(n)]
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if output is not None:
        write_atomic(output, lines)
    else:
        sys.stdout.write(lines)
    return records


def main(argv: list[str] | None = None) -> None:
    from framework.runs import parse_args

    try:
        args, overrides = parse_args(
            sys.argv[1:] if argv is None else argv,
            {"run": None, "input": None, "output": None, "ckpt": None, "task_packages": None},
        )
        if not args["input"]:
            raise UserError(f"name the inputs: input=FILE or input=- (stdin); usage: {USAGE}")
        predict(args, overrides)
    except UserError as e:
        print_error(e)
        sys.exit(2)


if __name__ == "__main__":
    main()
