"""``python -m framework.evaluate run=RUN_DIR [split=val|test] data.path=DIR ...``: score a
trained run on any labelled split, without training.

The run's config gives the task, model and data settings; overrides (``data.path``,
``data.val_file``, ``data.test_file``, ``data.format``...) point it at other data. The split's
metrics go to ``metrics.json``, with the task's figures (confusion matrix, per-type F1,
predicted vs gold), in a new directory ``RUN_DIR/eval/DATE_TIME`` (or ``output_dir=DIR``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from framework.errors import UserError, print_error
from framework.fileio import is_inside, write_atomic


def check_output_dir(out_dir: Path, run_dir: Path) -> None:
    """Refuse an ``output_dir`` whose files would replace the run's: the run directory, a
    folder of it other than ``eval/``, a folder that holds the run, or a file."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"output_dir={out_dir} is a file; name a folder (new or empty)")
    in_eval = is_inside(out_dir, run_dir / "eval") and not is_inside(run_dir / "eval", out_dir)
    if (is_inside(out_dir, run_dir) and not in_eval) or is_inside(run_dir, out_dir):
        raise UserError(
            f"output_dir={out_dir} would put the evaluation among the run's own files "
            f"({run_dir}); leave output_dir unset (RUN_DIR/eval/DATE_TIME) or name a new folder"
        )


def check_output_files(out_dir: Path, figures: list[str]) -> None:
    """Refuse an existing ``output_dir`` that holds anything but an earlier evaluation (its
    ``metrics.json`` and this task's figures): evaluate replaces those, and nothing else."""
    if not out_dir.is_dir():
        return
    found = sorted(p.name for p in out_dir.iterdir())
    metrics = out_dir / "metrics.json"
    try:
        earlier = not metrics.exists() or {"run", "split"} <= set(json.loads(metrics.read_text()))
    except (OSError, ValueError, TypeError):
        earlier = False
    other = [n for n in found if n not in ("metrics.json", *figures)]
    if other or not earlier:
        shown = ", ".join((other or ["metrics.json"])[:5])
        raise UserError(
            f"output_dir={out_dir} already holds {shown}, which is not an earlier evaluation's; "
            "name a new or empty folder"
        )


def evaluate(args: dict[str, Any], overrides: list[str]) -> dict[str, float]:
    from framework.data import DataModule
    from framework.runs import inference_trainer, load_run, run_config, task_packages

    split = args["split"]
    if split not in ("val", "test"):
        raise UserError(f"split={split!r}: use val (data.val_file) or test (data.test_file)")
    run_dir = Path(args["run"])
    cfg = run_config(run_dir, overrides)
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    out_dir = Path(args.get("output_dir") or run_dir / "eval" / stamp)
    check_output_dir(out_dir, run_dir)
    tokenizer, module = load_run(
        run_dir, cfg, args.get("ckpt"), task_packages(args["task_packages"])
    )
    check_output_files(out_dir, [f"{name}.png" for name in module.figures.keys(keep_base=True)])
    data_args = OmegaConf.to_container(cfg.data, resolve=True)
    for other in {"train", "val", "test"} - {split}:  # read the one split only
        data_args[f"{other}_file"] = None
    if data_args.get("hub_splits"):
        data_args["hub_splits"] = {split: data_args["hub_splits"].get(split)}
    if data_args.get("path") and not data_args.get(f"{split}_file"):
        raise UserError(f"no {split} file: set data.{split}_file=FILE (in data.path)")
    datamodule = DataModule(module.task, tokenizer, seed=cfg.seed, **data_args)
    datamodule.setup_data(fit=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    trainer = inference_trainer(cfg, overrides)
    module.draw_figures = True
    run = trainer.validate if split == "val" else trainer.test
    (result,) = run(module, dataloaders=datamodule._loader(split), verbose=False)
    module.write_figures(out_dir)
    metrics = {k: float(v) for k, v in result.items()}
    source = data_args.get("path") or data_args.get("hub_id")
    info = {"run": str(run_dir), "split": split, "data": source, "examples": None}
    info["file"] = data_args.get(f"{split}_file")
    info["examples"] = len(datamodule.splits[split])
    write_atomic(out_dir / "metrics.json", json.dumps({**metrics, **info}, indent=2) + "\n")
    print(" ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    print(f"Evaluation directory: {out_dir}")
    return metrics


def main(argv: list[str] | None = None) -> None:
    from framework.runs import parse_args

    known = {"run": None, "split": "val", "output_dir": None, "ckpt": None, "task_packages": None}
    try:
        args, overrides = parse_args(sys.argv[1:] if argv is None else argv, known)
        evaluate(args, overrides)
    except UserError as e:
        print_error(e)
        sys.exit(2)


if __name__ == "__main__":
    main()
