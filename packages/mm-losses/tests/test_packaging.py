"""mm-losses depends on torch only: declared dependencies and actual imports."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]
SOURCE = PACKAGE / "src" / "mm_losses"
ALLOWED_THIRD_PARTY = {"torch"}


def test_declared_dependencies_are_exactly_torch():
    project = tomllib.loads((PACKAGE / "pyproject.toml").read_text())["project"]
    names = {
        re.split(r"[\s<>=!~;\[]", dep, maxsplit=1)[0].lower() for dep in project["dependencies"]
    }
    assert names == {"torch"}, f"mm-losses must depend on torch only, declares {sorted(names)}"
    assert not project.get("optional-dependencies"), "mm-losses must have no extras"


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
    return modules


def test_source_imports_only_torch_and_the_standard_library():
    files = sorted(SOURCE.rglob("*.py"))
    assert files, f"no sources under {SOURCE}"
    allowed = ALLOWED_THIRD_PARTY | set(sys.stdlib_module_names) | {"mm_losses", "__future__"}
    offenders = {
        f"{path.relative_to(PACKAGE)}: {module}"
        for path in files
        for module in _imported_modules(path)
        if module not in allowed
    }
    assert not offenders, f"mm-losses imports outside torch/stdlib: {sorted(offenders)}"
