"""The import contracts of ARCHITECTURE.md, checked by import-linter on every run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_layers_contract_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """net knows no capability, storage nothing above it, nothing but cli imports cli."""
    from importlinter.cli import lint_imports

    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT))
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0


def test_contract_catches_an_upward_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The contract is not vacuous: a storage module importing the archive breaks it."""
    from importlinter.cli import lint_imports

    pkg = tmp_path / "pacsctl"
    for src in (ROOT / "pacsctl").rglob("*.py"):
        dest = pkg / src.relative_to(ROOT / "pacsctl")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(src.read_text())
    with open(pkg / "storage" / "files.py", "a") as fh:
        fh.write("\nfrom pacsctl.archive import archive as _upward  # noqa\n")
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "pacsctl" or m.startswith("pacsctl.")]:
        monkeypatch.delitem(sys.modules, name)  # grimp must find the copy, not the real package
    assert lint_imports(config_filename=str(tmp_path / "pyproject.toml"), no_cache=True) == 1
