"""The house rules the layout keeps: the model files depend on torch only, no module is huge."""

from __future__ import annotations

import ast

from tests.conftest import ROOT

STDLIB = {"__future__", "dataclasses", "math", "typing", "warnings"}


def _imports(path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_model_files_import_torch_only():
    # encoder.py is the spec of the model; attention.py its attention back-ends.
    for name in ("encoder.py", "attention.py"):
        for module in _imports(ROOT / "framework" / name):
            top = module.split(".")[0]
            allowed = top in STDLIB or top == "torch" or module == "framework.attention"
            # flash-attn: optional varlen kernel, imported only if installed
            assert allowed or top == "flash_attn", f"{name} imports {module}"


def test_framework_never_imports_tasks_nor_probes_task_objects():
    # The task contract is framework/task.py: framework/ calls declared hooks only, and finds
    # the task packages through the config (task_packages), not by importing them.
    for path in sorted((ROOT / "framework").glob("*.py")):
        tree = ast.parse(path.read_text())
        for module in _imports(path):
            assert module.split(".")[0] != "tasks", f"{path.name} imports {module}"
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                if node.func.id in ("hasattr", "getattr") and node.args:
                    target = ast.unparse(node.args[0])
                    assert "task" not in target, f"{path.name}: {ast.unparse(node)}"
            if isinstance(node, ast.Constant) and node.value in ("perplexity", "metric_inputs"):
                raise AssertionError(f"{path.name} names the task key {node.value!r}")
