"""Command-line checks run before Hydra, so that a wrong override fails with one line.

Hydra reports an unknown config-group option or key in several lines and without suggestions;
here each override is checked against the real config tree and the error names the valid choices
and the closest match. Anything this check does not understand is left for Hydra to report.
"""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from framework.config import CONF_DIR
from framework.errors import UserError, did_you_mean

# Hydra flags that take a value (the value is not an override).
_FLAGS_WITH_VALUE = {"--config-name", "-cn", "--config-path", "-cp", "--config-dir", "-cd",
                     "--cfg", "-c", "--package", "-p", "--experimental-rerun"}  # fmt: skip


def _hint(word: str, options: list[str]) -> str:
    return did_you_mean(word, options)


def group_options(group: str) -> list[str] | None:
    """Options of a config group (``conf/<group>/*.yaml``), or None if ``group`` is not one."""
    d = CONF_DIR / group
    # A leading underscore marks a base that the options compose from (model/_base.yaml).
    return (
        sorted(p.stem for p in d.glob("*.yaml") if not p.stem.startswith("_"))
        if d.is_dir()
        else None
    )


def _overrides(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a.startswith("-"):
            skip = a in _FLAGS_WITH_VALUE
        else:
            out.append(a)
    return out


def trainer_arguments() -> list[str]:
    """The keyword arguments of ``lightning.Trainer``: each is ``trainer.NAME=...`` without +."""
    import inspect

    from lightning import Trainer

    return [p for p in inspect.signature(Trainer.__init__).parameters if p != "self"]


def expand_trainer_overrides(argv: list[str]) -> list[str]:
    """``trainer.NAME=V`` -> ``++trainer.NAME=V`` (set or add) for a ``lightning.Trainer``
    argument that the trainer config may not list; other arguments unchanged."""
    names = None
    out = []
    for a in argv:
        key = a.partition("=")[0]
        if a[0] not in "+~-" and key.startswith("trainer.") and key.count(".") == 1:
            names = names if names is not None else set(trainer_arguments())
            if key.removeprefix("trainer.") in names:
                a = f"++{a}"
        out.append(a)
    return out


PLUGIN_TASK = "_plugin"  # conf/task/_plugin.yaml: a task without a YAML of its own
_PLUGIN_CHOICE = f"task={PLUGIN_TASK}"  # what expand_task_overrides writes; not a listed option


def expand_task_overrides(argv: list[str]) -> list[str]:
    """``task=PKG.MODULE:CLASS`` (or an installed plug-in's name) -> ``task=_plugin
    task.name=...``, and then each ``task.OPTION=V`` -> ``++task.OPTION=V``: a task needs no YAML
    in ``conf/task/``, its options are its constructor's (``build_task`` checks them)."""
    from framework.registry import is_import_path, plugin_names

    args = _overrides(argv)
    chosen = [a.partition("=")[2] for a in args if a.startswith("task=")]
    if not chosen or chosen[-1] in (group_options("task") or []):
        return argv
    name = chosen[-1]
    if not (is_import_path(name) or name in plugin_names()):
        return argv  # an unknown option: check_overrides names the choices
    out = []
    for a in argv:
        key = a.partition("=")[0] if a in args else ""
        if key == "task":
            a = f"task={PLUGIN_TASK}"
            out.append(f"task.name={name}")
        elif key.startswith("task.") and key != "task.name":
            a = f"++{a}"
        out.append(a)
    return out


def check_overrides(argv: list[str]) -> None:
    """Raise ``UserError`` for an unknown group option or config key among ``argv``'s overrides,
    or a run directory that is an existing file (Hydra's ``mkdir`` would fail with a traceback)."""
    for arg in _overrides(argv):
        key, _, value = arg.lstrip("+").partition("=")
        if key in ("hydra.run.dir", "hydra.sweep.dir") and Path(value).is_file():
            raise UserError(f"{key}={value} is an existing file; name a directory")
    try:
        parsed = OverridesParser.create().parse_overrides(_overrides(argv))
    except Exception:
        return  # a syntax error: Hydra's own message is the clearest
    group_choices: list[str] = []
    keys: list[tuple[str, bool]] = []  # (key, is deletion)
    for o in parsed:
        key = o.key_or_group
        if o.package or key.startswith("hydra") or (o.is_add() or o.is_force_add()):
            continue
        options = group_options(key)
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.value()]
        if options is not None:
            # a value may select several options at once: logger=[csv,tensorboard]
            flat = [x for v in values for x in (v if isinstance(v, list) else [v])]
            for v in flat:
                if v is not None and str(v) not in options and f"{key}={v}" != _PLUGIN_CHOICE:
                    own = " (or a task of your own: task=PKG.MODULE:CLASS)" if key == "task" else ""
                    raise UserError(
                        f"unknown {key} {v!r}; choose one of: {', '.join(options)}{own}."
                        + _hint(str(v), options)
                    )
            if values and values[0] is not None and not isinstance(values[0], list):
                group_choices.append(f"{key}={values[0]}")
        else:
            keys.append((key, o.is_delete()))
    if not keys:
        return
    cfg = _compose(group_choices)
    for key, _ in keys:
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent, throw_on_resolution_failure=False) if parent else cfg
        # The key's presence, not its value: a value that interpolates Hydra's runtime
        # (${paths.output_dir}/checkpoints) cannot be resolved here, and exists all the same.
        if isinstance(node, DictConfig) and leaf in node.keys():
            continue
        if not isinstance(node, DictConfig):
            raise UserError(f"unknown config key {key!r}: {parent!r} is not a section")
        siblings = [str(k) for k in node.keys()]
        if parent == "trainer":  # any lightning.Trainer argument is accepted
            if leaf in trainer_arguments():
                continue
            siblings = sorted({*siblings, *trainer_arguments()})
        where = f"'{parent}'" if parent else "the top level"
        raise UserError(
            f"unknown config key {key!r}; {where} has: {', '.join(siblings)}."
            + _hint(leaf, siblings)
            + " (prefix with + to add a new key)"
        )


def _compose(overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=overrides)
