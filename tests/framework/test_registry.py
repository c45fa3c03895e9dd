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


def test_every_task_has_a_yaml_with_its_name():
    from tests.conftest import ROOT

    for name in list_tasks():
        text = (ROOT / "conf" / "task" / f"{name}.yaml").read_text()
        assert f"name: {name}\n" in text
