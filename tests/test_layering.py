"""The sans-IO packages never touch I/O, clocks or randomness (DESIGN.md §2 rule 1)."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SANS_IO = ["rmsec/wire", "rmsec/transport", "rmsec/security", "plugins"]
FORBIDDEN_MODULES = {"trio", "socket", "time", "random", "asyncio", "selectors"}


def sans_io_files() -> list[pathlib.Path]:
    return sorted(p for d in SANS_IO for p in (ROOT / d).rglob("*.py"))


def violations(path: pathlib.Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            names = []
        for name in names:
            if name.split(".")[0] in FORBIDDEN_MODULES:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name}")
        if isinstance(node, ast.Attribute) and node.attr == "urandom":
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} calls os.urandom")
        if (
            isinstance(node, ast.ImportFrom)
            and node.module == "os"
            and any(alias.name == "urandom" for alias in node.names)
        ):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} imports os.urandom")
    return found


def test_there_are_sans_io_files() -> None:
    assert len(sans_io_files()) >= 5


@pytest.mark.parametrize("path", sans_io_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_sans_io_module_does_no_io(path: pathlib.Path) -> None:
    assert violations(path) == []


def test_checker_catches_a_violation(tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import time\nfrom trio import sleep\nimport os\nos.urandom(4)\n")
    bad_rel = ROOT / "tests" / "_layering_probe.py"
    bad_rel.write_text(bad.read_text())
    try:
        assert len(violations(bad_rel)) == 3
    finally:
        bad_rel.unlink()
