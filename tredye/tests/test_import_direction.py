"""Apps import one way: platform (`tredye/`) ← `accounts` ← `trading` ← `marketdata` ← the
project's roots (URLs, ASGI and Celery entry points), which may import anything.

Read from the source (every `import`, also inside functions), not by importing. Tests and
migrations are not the apps' code and are not checked.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from testing.helpers import ROOT

LAYERS = {"tredye": 0, "accounts": 1, "trading": 2, "marketdata": 3}
ROOTS = {"tredye.urls", "tredye.asgi", "tredye.celery"}
# Upward imports still to remove, each with its reason (none left). The test fails when one is
# gone (drop it here) or a new one appears.
KNOWN: set[tuple[str, str]] = set()


def _modules() -> dict[str, Path]:
    found = {}
    for app in LAYERS:
        for path in (ROOT / app).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if "tests" in parts or "migrations" in parts:
                continue
            name = ".".join(parts).removesuffix(".__init__")
            found[name] = path
    return found


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def upward_imports() -> set[tuple[str, str]]:
    upward = set()
    for module, path in _modules().items():
        if module in ROOTS:
            continue
        layer = LAYERS[module.split(".")[0]]
        for imported in _imports(path):
            target = LAYERS.get(imported.split(".")[0])
            if target is not None and target > layer:
                upward.add((module, imported))
    return upward


def test_no_app_imports_upward():
    assert upward_imports() == KNOWN


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The checker itself: an upward import inside a function is found."""
    module = tmp_path / "accounts" / "late.py"
    module.parent.mkdir()
    module.write_text("def f():\n    from trading.models import Order\n    return Order\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "tredye").mkdir()
    (tmp_path / "trading").mkdir()
    (tmp_path / "marketdata").mkdir()
    assert upward_imports() == {("accounts.late", "trading.models")}
