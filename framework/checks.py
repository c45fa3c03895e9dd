"""Checks of the composed config before a run reads or writes anything, each a one-line
``UserError``: the type of every value that becomes a constructor argument (``data.*``,
``optim.*``, ``seed``), keys added with ``+`` that no constructor takes, ``task.mode``, and a
stopping rule that never stops; and the data module's argument values (``check_data_args``,
for a ``DataModule`` built without a config too).

The expected types are the constructors' own annotations (``DataModule.__init__``,
``TaskModule.__init__``): one source of truth, so a new option is checked without an edit here.
Written by hand because Hydra's structured configs would move every default into dataclasses
and still report a wrong type as a multi-line traceback.
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any

from omegaconf import DictConfig, OmegaConf

from framework.errors import UserError, did_you_mean

# Constructor arguments that the framework passes itself, not the config section.
_PASSED = {"self", "task", "tokenizer", "seed", "encoder", "head"}


def check_config(cfg: DictConfig) -> None:
    from framework.data import DataModule
    from framework.module import TaskModule

    _check_section(cfg, "data", DataModule.__init__)
    _check_section(cfg, "optim", TaskModule.__init__)
    _check_value("seed", cfg.get("seed"), int)
    mode = cfg.task.get("mode")
    if mode not in ("min", "max"):
        raise UserError(
            f"task.mode={mode!r}: use max (a higher {cfg.task.get('monitor')} is better) or min"
        )
    t = cfg.get("trainer") or {}
    if t.get("max_epochs") == -1 and t.get("max_steps", -1) in (-1, None) and not t.get("max_time"):
        raise UserError(
            "trainer.max_epochs=-1 trains until stopped by hand: also set trainer.max_steps=N "
            "or trainer.max_time=DD:HH:MM:SS"
        )


def _check_section(cfg: DictConfig, section: str, init: Any) -> None:
    values = OmegaConf.to_container(cfg[section], resolve=True)
    hints = typing.get_type_hints(init)
    signature = inspect.signature(init).parameters
    params = [p for p in signature if p not in _PASSED]
    for key, value in values.items():
        if key not in params:
            hint = did_you_mean(key, params)
            raise UserError(
                f"unknown config key '{section}.{key}'; '{section}' has: {', '.join(params)}.{hint}"
            )
        if key in hints:
            _check_value(f"{section}.{key}", value, hints[key], signature[key].default)


def _check_value(key: str, value: Any, hint: Any, default: Any = 0) -> None:
    if not _fits(value, hint):
        raise UserError(
            f"{key}={_show(value)} is not {_describe(hint)} (e.g. {key}={_cli(default)})"
        )


def _fits(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        item = args[0] if args else Any
        return isinstance(value, list | tuple) and all(_fits(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    return True  # a type this check does not know: left to the constructor


_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
          type(None): "null"}  # fmt: skip


def _parts(hint: Any) -> list[Any]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return list(typing.get_args(hint))
    return [hint]


def _describe(hint: Any) -> str:
    names = []
    for part in _parts(hint):
        origin, args = typing.get_origin(part), typing.get_args(part)
        if origin in (list, tuple):
            item = _NAMES.get(args[0], "a value") if args else "a value"
            names.append(f"a list of {item.split(' ', 1)[-1]}s")
        else:
            names.append(_NAMES.get(part, "a mapping"))
    return " or ".join(dict.fromkeys(names))


def _cli(value: Any) -> str:
    """``value`` as a command-line override writes it."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, list | tuple):
        return "[" + ",".join(_cli(v) for v in value) + "]"
    return str(value)


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def check_data_args(
    path: str | None,
    hub_id: str | None,
    batch_size: int,
    eval_batch_size: int | None,
    num_workers: int,
    max_length: int,
    max_tokens: int | None,
    num_proc: int,
) -> None:
    """The data module's values that no run can use, each a one-line ``UserError``."""
    if path is None and hub_id is None:
        raise UserError("no data source: set data.path=DIR (local files) or data.hub_id")
    if batch_size < 1:
        raise UserError(f"data.batch_size must be >= 1, got {batch_size}")
    if eval_batch_size is not None and eval_batch_size < 1:
        raise UserError(
            f"data.eval_batch_size must be >= 1 (or null: data.batch_size), got {eval_batch_size}"
        )
    if num_workers < 0:
        raise UserError(
            f"data.num_workers must be >= 0 (0: load in the main process), got {num_workers}"
        )
    if max_length < 2:
        raise UserError(
            f"data.max_length must be >= 2 (room for [CLS] and [SEP]), got {max_length}"
        )
    if max_tokens is not None and max_tokens < max_length:
        raise UserError(
            f"data.max_tokens={max_tokens} is below data.max_length={max_length}: the "
            "longest example would not fit in a batch; raise data.max_tokens"
        )
    if num_proc < 1:
        raise UserError(f"data.num_proc must be >= 1 (tokenizing processes), got {num_proc}")
