"""Workspace rules from the architecture: package layout, versions, and dependency direction."""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["mm-data", "mm-models", "mm-losses", "mm-eval", "mm-train"]
WORKSPACE_MODULES = {p.replace("-", "_") for p in PACKAGES}
# A package may import only these other workspace packages (architecture.md).
ALLOWED = {name.replace("-", "_"): set() for name in PACKAGES}


def _pyproject(package: str) -> dict:
    return tomllib.loads((ROOT / "packages" / package / "pyproject.toml").read_text())


def _imported_top_level(src: Path) -> dict[str, set[Path]]:
    found: dict[str, set[Path]] = {}
    for path in src.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(path)
    return found


def _distribution_to_module(requirement: str) -> str:
    name = requirement.split(";")[0]
    for sep in "<>=!~[ ":
        name = name.split(sep)[0]
    return {"scikit-learn": "sklearn", "pyyaml": "yaml", "pillow": "PIL"}.get(
        name.lower(), name.replace("-", "_")
    )


@pytest.mark.parametrize("package", PACKAGES)
def test_package_layout(package):
    base = ROOT / "packages" / package
    module = package.replace("-", "_")
    meta = _pyproject(package)["project"]
    assert meta["name"] == package
    assert meta["version"], f"{package} has no version"
    assert meta["requires-python"] == ">=3.11"
    for required in ("README.md", "CHANGELOG.md", f"src/{module}/__init__.py", "tests"):
        assert (base / required).exists(), f"{package} lacks {required}"


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_are_declared_and_direction_respected(package):
    module = package.replace("-", "_")
    imported = _imported_top_level(ROOT / "packages" / package / "src" / module)
    meta = _pyproject(package)["project"]
    optional = [r for extra in meta.get("optional-dependencies", {}).values() for r in extra]
    declared = {_distribution_to_module(r) for r in [*meta["dependencies"], *optional]}
    stdlib = set(sys.stdlib_module_names)
    for name, files in imported.items():
        if name == module or name in stdlib:
            continue
        where = ", ".join(sorted(str(f.relative_to(ROOT)) for f in files))
        if name in WORKSPACE_MODULES:
            assert name in ALLOWED[module], f"{package} must not import {name} (in {where})"
        else:
            assert name in declared, f"{package} imports {name} without declaring it (in {where})"


def test_mm_losses_depends_on_torch_only():
    deps = _pyproject("mm-losses")["project"]["dependencies"]
    assert [_distribution_to_module(d) for d in deps] == ["torch"]


def test_root_project_depends_on_every_member():
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    names = {r.split("[")[0] for r in root["project"]["dependencies"]}
    assert set(PACKAGES) <= names
    assert root["tool"]["uv"]["workspace"]["members"] == ["packages/*"]
    for package in PACKAGES:
        assert root["tool"]["uv"]["sources"][package] == {"workspace": True}
