"""Registry: discovery of tasks/, lookup errors with suggestions, duplicate names."""

import pytest

from framework.errors import UserError
from framework.registry import get_task, list_tasks, register_task


def test_tasks_are_discovered_without_importing_them():
    assert "classification" in list_tasks()
    assert get_task("classification").name == "classification"


def test_unknown_task_lists_known_ones_and_suggests():
    with pytest.raises(UserError) as e:
        get_task("clasification")
    msg = str(e.value)
    assert "known tasks: " in msg and "classification" in msg
    assert "Did you mean 'classification'?" in msg
    assert "\n" not in msg


def test_duplicate_name_is_refused():
    with pytest.raises(ValueError, match="already registered"):

        @register_task("classification")
        class Other:
            pass


def test_a_tasks_yaml_repeats_its_class_faithfully():
    """A YAML is optional; where one ships, its name, monitor, mode and option values are the
    class's own (the class is the one source of the defaults)."""
    import inspect

    from omegaconf import OmegaConf

    from tests.conftest import ROOT

    for name in list_tasks():
        file = ROOT / "conf" / "task" / f"{name}.yaml"
        if not file.is_file():
            continue
        yaml, cls = OmegaConf.to_container(OmegaConf.load(file)), get_task(name)
        assert (yaml.pop("name"), yaml.pop("monitor"), yaml.pop("mode")) == (
            name,
            cls.monitor,
            cls.mode,
        )
        defaults = {k: p.default for k, p in inspect.signature(cls).parameters.items()}
        assert {k: defaults.get(k, "<not an option>") for k in yaml} == yaml, name
