"""The command line's parsing and help, in-process: no Redis, no daemon."""

from __future__ import annotations

import argparse
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from adaptive_scheduler import cli

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ("run", "enqueue", "job", "status", "shed", "tasks")


def test_the_top_help_lists_every_command_with_a_one_line_description(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    lines = cli._parser().format_help().splitlines()
    for name in COMMANDS:
        (line,) = [line for line in lines if line.split()[:1] == [name]]
        assert len(line.split()) > 3, line  # the name and a description, on one line
    assert "124" in "\n".join(lines)  # and the exit codes


@pytest.mark.parametrize("command", [(name,) for name in COMMANDS] + [("shed", "list"), ("shed", "replay")])
def test_every_command_has_a_help_that_exits_0(
    command: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([*command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: adaptive-scheduler {' '.join(command)}") and "--config" in out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["status"], None),
        (["--config", "a.toml", "status"], Path("a.toml")),
        (["status", "--config", "b.toml"], Path("b.toml")),
        (["--config", "a.toml", "status", "--json"], Path("a.toml")),
        (["shed", "list", "--config", "c.toml"], Path("c.toml")),
        (["job", "some-id", "--config", "d.toml", "--wait", "5"], Path("d.toml")),
        (["enqueue", "add", "[1, 2]", "--config", "e.toml"], Path("e.toml")),
    ],
)
def test_config_is_accepted_before_or_after_the_command(argv: list[str], expected: Path | None) -> None:
    assert cli._parser().parse_args(argv).config == expected


@pytest.mark.parametrize(
    ("argv", "wait"),
    [(["job", "x"], None), (["job", "x", "--wait"], float("inf")), (["job", "x", "--wait", "2.5"], 2.5)],
)
def test_job_waits_forever_for_a_bare_wait_and_at_most_the_seconds_given(
    argv: list[str], wait: float | None
) -> None:
    assert cli._parser().parse_args(argv).wait == wait


@pytest.mark.parametrize("text", ["0", "-1", "nan", "inf", "soon"])
def test_a_wait_that_is_not_a_positive_number_of_seconds_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="positive number of seconds"):
        cli._seconds(text)


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"adaptive-scheduler {pyproject_version()}\n"


def test_version_falls_back_to_pyproject_in_a_tree_that_was_never_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def not_installed(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    assert cli.package_version() == pyproject_version()


def pyproject_version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])
