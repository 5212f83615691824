"""The wheel carries every file the package reads at run time (a plain `pip install` must work)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_non_python_file_of_a_package_is_declared_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = config["tool"]["setuptools"].get("package-data", {})
    missing = []
    for package in ("scheduler", "tasks", "settings"):
        for path in (ROOT / package).rglob("*"):
            if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts:
                relative = path.relative_to(ROOT / package)
                if not any(relative.match(pattern) for pattern in declared.get(package, [])):
                    missing.append(f"{package}/{relative}")
    assert not missing, f"add to [tool.setuptools.package-data] in pyproject.toml: {missing}"
