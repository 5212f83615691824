"""What a plain `pip install` puts into site-packages: one import name, and every file read at run time.

The repository keeps its folders `scheduler/`, `tasks/` and `settings/`; the wheel maps them into one
package, `adaptive_scheduler`, so that a user's own `tasks.py`, `settings.py` or `scheduler.py` is never
shadowed by ours (issue 13). Built for real, with pip, as a user's install would be.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {
    "scheduler": "adaptive_scheduler",
    "tasks": "adaptive_scheduler/tasks",
    "settings": "adaptive_scheduler/settings",
}


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    out = tmp_path_factory.mktemp("wheel")
    command = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "--disable-pip-version-check",
        "-w",
        out,
        ROOT,
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    (wheel,) = out.glob("adaptive_scheduler-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def test_the_wheel_installs_one_import_name_only(wheel_names: set[str]) -> None:
    top_level = {name.split("/")[0] for name in wheel_names if ".dist-info/" not in name}
    assert top_level == {"adaptive_scheduler"}


def test_the_wheel_carries_every_file_of_the_packages(wheel_names: set[str]) -> None:
    expected = {
        f"{installed}/{path.relative_to(ROOT / folder).as_posix()}"
        for folder, installed in FOLDERS.items()
        for path in (ROOT / folder).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert expected - wheel_names == set()
    assert "adaptive_scheduler/lua/exchange.lua" in wheel_names
