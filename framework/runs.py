"""A finished run, loaded back for ``framework.predict`` and ``framework.evaluate``.

A run directory holds what is needed: ``config.yaml`` (the resolved config), the checkpoints
(weights, and the task's state: its label set) and ``export/`` (architecture and tokenizer). The
training data is not read again.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from framework.errors import UserError
from framework.resume import load_checkpoint, newest_valid_checkpoint


def parse_args(argv: list[str], known: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``key=value`` arguments: the command's own keys (``known``, with defaults) and the
    config overrides (``data.path=...``) for the run's config."""
    args, overrides = dict(known), []
    for arg in argv:
        key, eq, value = arg.partition("=")
        if not eq:
            raise UserError(f"argument {arg!r} is not key=value (e.g. run=logs/runs/...)")
        if key in known:
            args[key] = value
        elif "." in key:
            overrides.append(arg)
        else:
            raise UserError(
                f"unknown argument {key!r}; this command takes {', '.join(known)} and config "
                "overrides such as data.path=DIR"
            )
    if not args.get("run"):
        raise UserError("name the trained run: run=RUN_DIR (the directory a training printed)")
    return args, overrides


def _search_working_folder_last() -> None:
    """Put back the working folder that ``python -m framework.predict|evaluate`` dropped
    (``framework/__init__.py``), last: a package the user named with ``task_packages=`` is
    found there, and no installed module is shadowed by a file of that folder."""
    import framework

    folder = framework.DROPPED_FOLDER
    if folder and folder not in sys.path:
        sys.path.append(folder)


def run_config(run_dir: Path, overrides: list[str]) -> DictConfig:
    """The run's resolved config with ``overrides`` (existing keys only) applied."""
    file = run_dir / "config.yaml"
    if not file.is_file():
        raise UserError(f"{run_dir} is not a run directory (no config.yaml); run=RUN_DIR")
    cfg = OmegaConf.load(file)
    OmegaConf.set_struct(cfg, True)
    try:
        return OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
    except OmegaConfBaseException as e:
        msg = str(e).splitlines()[0]
        raise UserError(f"override not applicable to the run's config: {msg}") from None


def best_checkpoint(run_dir: Path) -> Path:
    """The checkpoint the run's metrics came from (metrics.json), else its newest valid one.

    Only a file inside ``run_dir`` is taken: a copied run directory must not load another
    run's checkpoint (an absolute path, ``..``, a symbolic link out of it).
    """
    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        try:
            best = json.loads(metrics.read_text()).get("best_checkpoint")
        except (json.JSONDecodeError, AttributeError):
            best = None
        path = inside(run_dir, best) if isinstance(best, str) else None
        if path is not None and path.is_file():
            return path
    newest = newest_valid_checkpoint(run_dir)
    if newest is None:
        raise UserError(f"no checkpoint in {run_dir}/checkpoints; train the run first")
    return newest


def readable_best(run_dir: Path) -> tuple[Path, Any]:
    """(path, contents) of the best checkpoint; when it cannot be read (truncated, damaged),
    of the newest intact one, with a warning naming both. The best one's error when none is
    intact."""
    path = best_checkpoint(run_dir)
    try:
        return path, load_checkpoint(path)
    except UserError as e:
        fallback = newest_valid_checkpoint(run_dir)
        if fallback is None or fallback.resolve() == path.resolve():
            raise
        print(
            f"warning: {e}; using {fallback}, the newest intact checkpoint, instead (ckpt=FILE "
            "names another)",
            file=sys.stderr,
        )
        return fallback, load_checkpoint(fallback)


def inside(run_dir: Path, name: str) -> Path | None:
    """``run_dir / name`` when it resolves to a path inside ``run_dir``, else None."""
    root = run_dir.resolve()
    path = (root / name).resolve()  # an absolute ``name`` replaces root: refused below
    return path if path.is_relative_to(root) else None


DEFAULT_TASK_PACKAGES = ("tasks",)


def task_packages(value: str | None) -> list[str]:
    """The ``task_packages=a,b`` (or ``[a,b]``) argument of predict/evaluate, as a list."""
    if not value:
        return list(DEFAULT_TASK_PACKAGES)
    return [p.strip() for p in value.strip("[]").split(",") if p.strip()]


def load_run(
    run_dir: Path, cfg: DictConfig, ckpt: str | None = None, packages: list[str] | None = None
) -> tuple[Any, Any]:
    """(tokenizer, TaskModule with the checkpoint's weights and task state), in eval mode.

    The task packages imported are ``packages`` (the user's ``task_packages=`` argument, default
    ``tasks``), never the ones the run's ``config.yaml`` names: a run directory from someone
    else must not make this process import a module of its choosing. A task named by import
    path (``pkg.mod:Class``) is imported only when ``packages`` holds ``pkg.mod``; an installed
    plug-in (entry point) is code the user installed, and is loaded.
    """
    from transformers import AutoTokenizer

    from framework.module import assemble
    from framework.registry import (
        build_task,
        get_task,
        import_task_packages,
        is_import_path,
        list_tasks,
        plugin_names,
    )

    # weights_only: a shared run directory runs no code
    path, state = (Path(ckpt), load_checkpoint(ckpt)) if ckpt else readable_best(run_dir)
    if not isinstance(state, dict) or "state_dict" not in state:
        raise UserError(f"{path} is not a tasklight checkpoint (no state_dict); ckpt=FILE")
    if "task_state" not in state:
        raise UserError(f"checkpoint {path} has no task state (written by an older version)")
    packages = list(packages or DEFAULT_TASK_PACKAGES)
    if set(packages) - set(DEFAULT_TASK_PACKAGES):  # the user named packages of their own
        _search_working_folder_last()
    import_task_packages(packages)
    name = cfg.task.name
    module = name.partition(":")[0] if is_import_path(name) else None
    if module in packages:  # the user named the task's module: they trust that code
        get_task(name)
    if name not in list_tasks() and name not in plugin_names():
        named = list(cfg.get("task_packages") or [])
        named = [module] if module else named
        raise UserError(
            f"task {name!r} of {run_dir} is not in the task packages imported "
            f"({', '.join(packages)}) nor an installed plug-in; its config.yaml names "
            f"{'the module' if module else 'task_packages'} {named}, which a run directory does "
            f"not import: pass task_packages={','.join(named) or 'PKG'} if you trust that code"
        )
    task = build_task(cfg.task, import_paths=False)
    try:
        task.load_state_dict(state["task_state"])
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(
            f"checkpoint {path} holds the state of another task than {cfg.task.name!r} "
            f"({type(e).__name__}: {e}); pass one of this run's checkpoints (ckpt=FILE)"
        ) from None
    export = run_dir / "export"
    found = [d for d in (export, run_dir / "tokenizer") if (d / "tokenizer.json").is_file()]
    if not found:
        raise UserError(f"no tokenizer in {run_dir} (export/ or tokenizer/); re-export the run")
    tok_dir = found[0]
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir), use_fast=True)
    task.use_tokenizer(tokenizer)
    m = cfg.model
    encoder = run_encoder(run_dir, cfg, state, len(tokenizer))
    encoder.unpad = bool(m.get("unpad", False))
    module = assemble(encoder, task)
    try:
        module.load_state_dict(state["state_dict"])
    except RuntimeError as e:  # another task's or model's checkpoint (ckpt=FILE)
        why = str(e).splitlines()[1].strip() if "\n" in str(e) else str(e)
        raise UserError(
            f"checkpoint {path} was written for another task or model than the run {run_dir} "
            f"({why[:160]}); pass one of this run's checkpoints (ckpt=FILE)"
        ) from None
    return tokenizer, module.eval()


def run_encoder(run_dir: Path, cfg: DictConfig, state: dict, vocab_size: int) -> Any:
    """The run's encoder architecture, weights not loaded: as its checkpoint recorded it
    (``encoder_config``); for a checkpoint of an older version, from ``export/config.json``
    (or the model config), with the checkpoint's position table (a RoBERTa layout exports its
    table without the rows before ``pad_token_id + 1``)."""
    import dataclasses

    from framework.encoder import Encoder
    from framework.pretrained import build_encoder, encoder_from_record

    m = cfg.model
    drop = {"attention_dropout": m.attention_dropout}
    if m.get("hidden_dropout") is not None:
        drop["hidden_dropout"] = m.hidden_dropout
    if isinstance(state.get("encoder_config"), dict):
        return encoder_from_record(state["encoder_config"], m.attn_impl, **drop)
    sizes = {"attn_impl": m.attn_impl, "vocab_size": vocab_size, **drop}
    export = run_dir / "export"
    if (export / "config.json").is_file():  # the architecture; the weights come from the ckpt
        encoder, _ = build_encoder(None, None, init_from=str(export), from_scratch=True, **sizes)
    else:
        encoder, _ = build_encoder(m.name_or_path, m.preset, **sizes)
    table = state["state_dict"].get("encoder.embeddings.position_embeddings.weight")
    extra = 0 if table is None else len(table) - encoder.cfg.max_position_embeddings
    if extra > 0:  # the rows a RoBERTa layout skips: its positions start at pad_token_id + 1
        cfg_ = dataclasses.replace(
            encoder.cfg, max_position_embeddings=len(table), position_offset=extra
        )
        encoder = Encoder(cfg_, attn_impl=m.attn_impl)
    return encoder


def inference_trainer(cfg: DictConfig, overrides: list[str] | None = None) -> Any:
    """A one-device Lightning ``Trainer`` for predict/evaluate: the run's accelerator, full
    precision (so that predictions equal the fp32 export's, whatever precision the run trained
    in; ``trainer.precision=bf16-mixed`` on the command line asks for another), no logger,
    checkpoints or progress bar."""
    import lightning as L

    asked = [o.partition("=")[2] for o in overrides or [] if o.startswith("trainer.precision=")]
    return L.Trainer(
        accelerator=cfg.trainer.get("accelerator", "auto"),
        devices=1,
        precision=asked[-1] if asked else "32-true",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
