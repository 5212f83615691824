"""`./dev`: its setup runs pip only when pyproject.toml (or the extras, or the checkout) changed.

Run on a copy of the script in a scratch directory, with stand-ins for the virtualenvs and the tools it
looks for, so nothing is installed: each stand-in python only notes how it was called.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTE_CALL = '#!/bin/sh\necho "$@" >> "$(dirname "$0")/../../calls.log"\n'


def stand_in(path: Path, script: str = NOTE_CALL) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(script)
    path.chmod(0o755)


def dev(tree: Path, *args: str) -> list[str]:
    """Run `./dev ARGS` in `tree`; returns the calls its stand-in pythons got, one line each."""
    log = tree / "calls.log"
    log.unlink(missing_ok=True)
    path = f"{tree / 'tools'}:{os.environ['PATH']}"
    result = subprocess.run(
        ["./dev", *args],
        cwd=tree,
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return log.read_text().splitlines() if log.exists() else []


def test_setup_runs_pip_again_only_once_pyproject_changed(tmp_path: Path) -> None:
    # Given a checkout whose .venv, second venv, StatsD and tools are already there
    shutil.copy(ROOT / "dev", tmp_path / "dev")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    stand_in(tmp_path / ".venv" / "bin" / "python")
    stand_in(tmp_path / ".venv" / "bin" / "ruff", "#!/bin/sh\n")
    stand_in(tmp_path / ".venv-rq2" / "bin" / "python")
    (tmp_path / ".statsd" / "node_modules" / "statsd").mkdir(parents=True)
    for tool in ("redis-server", "systemd-analyze"):
        stand_in(tmp_path / "tools" / tool, "#!/bin/sh\n")
    # When `./dev test` runs twice, then after an edit of pyproject.toml
    first, second = dev(tmp_path, "test", "-q"), dev(tmp_path, "test", "-q")
    with (tmp_path / "pyproject.toml").open("a") as pyproject:
        pyproject.write("\n# a new dependency\n")
    third = dev(tmp_path, "test", "-q")
    # Then pip installs the project the first time and after the edit, not in between; the tests run each time
    install = "-m pip install -q --disable-pip-version-check -e .[test]"
    assert first == [install, "-m pytest -q"]
    assert second == ["-m pytest -q"]
    assert third == [install, "-m pytest -q"]
