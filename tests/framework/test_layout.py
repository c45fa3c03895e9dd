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
