"""pacsctl uses typer's public API only, and pyproject pins the typer it was written against."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version

from tests.helpers import REPO_ROOT

PRIVATE_TYPER = re.compile(r"^\s*(from\s+typer\s+import\s+_\w+|from\s+typer\._\w+|import\s+typer\._\w+)", re.M)


def test_no_private_typer_modules_are_imported() -> None:
    offenders = [str(path.relative_to(REPO_ROOT)) for path in (REPO_ROOT / "pacsctl").rglob("*.py")
                 if PRIVATE_TYPER.search(path.read_text(encoding="utf-8"))]
    assert offenders == []


def test_the_typer_requirement_admits_the_installed_typer_and_no_other_minor() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    spec = next(d for d in project["dependencies"] if re.match(r"typer\b", d))
    major, minor = (int(p) for p in version("typer").split(".")[:2])
    assert f">={major}.{minor}" in spec and f"<{major}.{minor + 1}" in spec, spec
