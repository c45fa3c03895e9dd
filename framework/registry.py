"""The task registry: tasks are chosen by name (``task=classification``).

A task class registers itself with ``@register_task(name)`` when its module is imported. The
packages that hold tasks are imported by name from the config (``task_packages``, default
``[tasks]``, whose ``__init__`` imports each of its modules): ``framework/`` never imports
``tasks`` itself, and a user's own package of tasks is one entry in that list.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from typing import TypeVar

from omegaconf import DictConfig, OmegaConf

from framework.errors import UserError

T = TypeVar("T")
_TASKS: dict[str, type] = {}


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


def import_task_packages(names: list[str]) -> None:
    """Import each package (or module) named in ``names``: their tasks register themselves."""
    for name in names:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name and not name.startswith(f"{e.name}."):
                raise  # the package exists; something it imports is missing
            raise UserError(
                f"task package {name!r} cannot be imported; check task_packages (and that it "
                "is on PYTHONPATH)"
            ) from None


def list_tasks() -> list[str]:
    """Names of all registered tasks, sorted."""
    return sorted(_TASKS)


def get_task(name: str) -> type:
    """The task class registered as ``name``; a ``UserError`` with suggestions otherwise."""
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
