"""Every benchmark answers `--help`: its options are how the README's figures are reproduced."""

from __future__ import annotations

import importlib

import pytest

BENCHMARKS = (
    "backlog",
    "burst",
    "chaos",
    "chaos_producer",
    "dashboard",
    "dispatch",
    "drain",
    "durability",
    "enqueue_cost",
    "load",
    "memstorm",
    "monitor",
    "peers",
    "scale",
    "soak",
    "storm",
)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_help_prints_its_usage(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    module = importlib.import_module(f"bench.{name}")
    with pytest.raises(SystemExit) as exited:
        module.main(["--help"])
    assert exited.value.code == 0
    assert f"python -m bench.{name}" in capsys.readouterr().out
