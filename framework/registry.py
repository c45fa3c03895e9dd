"""The task registry: tasks are chosen by name (``task=classification``).

A task class registers itself with ``@register_task(name)`` when its module is imported. The
packages that hold tasks are imported by name from the config (``task_packages``, default
``[tasks]``, whose ``__init__`` imports each of its modules): ``framework/`` never imports
``tasks`` itself. A task outside tasklight's tree needs no edit here either:

- by import path, ``task=my_pkg.tasks:PosTagging`` (a ``Task`` subclass, registered or not);
- by an entry point of an installed package in the ``tasklight.tasks`` group
  (``[project.entry-points."tasklight.tasks"] pos = "my_pkg.tasks:PosTagging"``): ``task=pos``;
- by a package in ``task_packages`` whose modules use ``@register_task``.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TypeVar

from omegaconf import DictConfig, OmegaConf

from framework.errors import UserError, did_you_mean

T = TypeVar("T")
_TASKS: dict[str, type] = {}
ENTRY_POINT_GROUP = "tasklight.tasks"


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


SHIPPED = "tasks"  # the package of the shipped tasks, beside framework/ (in a wheel too)


def import_shipped_tasks() -> None:
    """Import the shipped ``tasks`` package from where tasklight is installed, never by a search
    of ``sys.path``: ``python -m`` puts the working folder first there, and a folder (a run
    directory, a user's project) holding a ``tasks/`` of its own would be imported instead.
    Written by hand because ``importlib.import_module`` can only search."""
    import importlib.util
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / SHIPPED
    loaded = sys.modules.get(SHIPPED)
    if loaded is not None:
        if Path(getattr(loaded, "__file__", None) or "").resolve().parent == root:
            return
        raise UserError(
            f"a package named {SHIPPED!r} from {getattr(loaded, '__file__', '?')} is imported, "
            f"which hides tasklight's shipped tasks ({root}); rename that package"
        )
    spec = importlib.util.spec_from_file_location(
        SHIPPED, root / "__init__.py", submodule_search_locations=[str(root)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[SHIPPED] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(SHIPPED, None)
        raise


def import_task_packages(names: list[str]) -> None:
    """Import each package (or module) named in ``names``: their tasks register themselves.
    ``tasks`` is the shipped package, imported from where tasklight is installed."""
    for name in names:
        if name == SHIPPED:
            import_shipped_tasks()
            continue
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name and not name.startswith(f"{e.name}."):
                raise  # the package exists; something it imports is missing
            raise UserError(
                f"task package {name!r} cannot be imported; check task_packages (and that it "
                "is on PYTHONPATH)"
            ) from None
        except SystemExit as e:  # it would end the run with its own status (0: "success")
            raise UserError(
                f"task package {name!r} exited while being imported (exit({e.code!r})); a "
                "module of tasks must not call exit() at import"
            ) from None


def list_tasks() -> list[str]:
    """Names of all registered tasks, sorted (installed plug-ins are loaded when named)."""
    return sorted(_TASKS)


def plugin_names() -> list[str]:
    """Names of the installed plug-in tasks (``tasklight.tasks`` entry points), sorted."""
    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


def is_import_path(name: str) -> bool:
    """``pkg.module:Class``: a task named by where its class lives."""
    module, sep, attr = name.partition(":")
    return bool(sep and module and attr.isidentifier())


def get_task(name: str, import_paths: bool = True) -> type:
    """The task class named ``name``: registered, an installed plug-in (entry point) or, if
    ``import_paths``, an import path ``pkg.module:Class``; a one-line ``UserError`` otherwise."""
    if name in _TASKS:
        return _TASKS[name]
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if found:
        cls = _load(name, found[0].value, found[0].load, f"the entry point {found[0].value!r}")
    elif is_import_path(name) and import_paths:
        module, _, attr = name.partition(":")
        cls = _load(name, name, lambda: getattr(importlib.import_module(module), attr), "it")
    else:
        known = sorted({*_TASKS, *plugin_names()})
        hint = did_you_mean(name, known)
        raise UserError(
            f"unknown task {name!r}; known tasks: {', '.join(known)}, or a class of your own as "
            f"task=PKG.MODULE:CLASS.{hint}"
        )
    if "name" not in vars(cls):  # not registered under a name of its own (a subclass inherits)
        cls.name = name
    _TASKS[name] = cls
    return cls


def _load(name: str, path: str, load: Callable[[], type], what: str) -> type:
    """The class ``load()`` returns, checked; a broken plug-in is a one-line ``UserError``."""
    from framework.task import Task

    module = path.partition(":")[0]
    try:
        cls = load()
    except ModuleNotFoundError as e:
        if e.name == module or module.startswith(f"{e.name}."):
            raise UserError(
                f"task {name!r}: module {module!r} cannot be imported; install it or put its "
                "directory on PYTHONPATH"
            ) from None
        raise UserError(f"task {name!r}: importing {module!r} failed: {e}") from None
    except AttributeError as e:
        raise UserError(f"task {name!r}: {e}; check the class name after ':'") from None
    except (Exception, SystemExit) as e:  # a plug-in whose import raises or exits
        raise UserError(
            f"task {name!r}: importing {what} failed: {type(e).__name__}: {e}"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise UserError(f"task {name!r}: {path} is not a subclass of framework.task.Task")
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        raise UserError(f"task {name!r}: {path} does not implement {missing}")
    return cls


TASK_KEYS = ("name", "monitor", "mode")  # task config keys that are not constructor args


def build_task(task_cfg: DictConfig, import_paths: bool = True):
    """The task named ``task_cfg.name``, with the rest of ``task_cfg`` as its args."""
    args = OmegaConf.to_container(task_cfg, resolve=True)
    cls = get_task(task_cfg.name, import_paths)
    kwargs = {k: v for k, v in args.items() if k not in TASK_KEYS}
    known = set(inspect.signature(cls).parameters)
    unknown = sorted(set(kwargs) - known)
    if unknown:  # e.g. a key an experiment sets for another task
        raise UserError(
            f"task {task_cfg.name!r} has no option {', '.join(unknown)}; its options: "
            f"{', '.join(sorted(known))}"
        )
    try:
        return cls(**kwargs)
    except UserError:
        raise
    except (Exception, SystemExit) as e:  # a plug-in's constructor: named, not a traceback
        raise UserError(
            f"task {task_cfg.name!r}: its constructor raised {type(e).__name__}: {e}; check "
            "the task.* options"
        ) from None
