"""The task registry: tasks are chosen by name (``task=classification``).

Every module in the ``tasks`` package is imported on first lookup, so a new task is one new file in
``tasks/`` (plus its YAML in ``conf/task/``): no list to edit here, and no lookup that silently
depends on an import having happened elsewhere.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable
from typing import TypeVar

from omegaconf import DictConfig, OmegaConf

from framework.errors import UserError

T = TypeVar("T")
_TASKS: dict[str, type] = {}
_discovered = False


def register_task(name: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: ``@register_task("ner")`` makes the class available as ``task=ner``."""

    def deco(cls: type[T]) -> type[T]:
        if name in _TASKS and _TASKS[name] is not cls:
            raise ValueError(
                f"task name {name!r} is already registered by {_TASKS[name].__module__}"
            )
        _TASKS[name] = cls
        cls.name = name  # type: ignore[attr-defined]
        return cls

    return deco


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    import tasks

    for mod in pkgutil.iter_modules(tasks.__path__):
        importlib.import_module(f"tasks.{mod.name}")
    _discovered = True


def list_tasks() -> list[str]:
    """Names of all registered tasks, sorted."""
    _discover()
    return sorted(_TASKS)


def get_task(name: str) -> type:
    """The task class registered as ``name``; a ``UserError`` with suggestions otherwise."""
    _discover()
    if name not in _TASKS:
        close = difflib.get_close_matches(name, _TASKS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UserError(f"unknown task {name!r}; known tasks: {', '.join(sorted(_TASKS))}.{hint}")
    return _TASKS[name]


TASK_KEYS = ("name", "monitor", "mode")  # task config keys that are not constructor args


def build_task(task_cfg: DictConfig):
    """The registered task named ``task_cfg.name``, with the rest of ``task_cfg`` as its args."""
    import inspect

    args = OmegaConf.to_container(task_cfg, resolve=True)
    cls = get_task(task_cfg.name)
    kwargs = {k: v for k, v in args.items() if k not in TASK_KEYS}
    known = set(inspect.signature(cls).parameters)
    unknown = sorted(set(kwargs) - known)
    if unknown:  # e.g. a key an experiment sets for another task
        raise UserError(
            f"task {task_cfg.name!r} has no option {', '.join(unknown)}; its options: "
            f"{', '.join(sorted(known))}"
        )
    return cls(**kwargs)
