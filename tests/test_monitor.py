"""Memory readings: cgroup v1 and v2 files parsed from files we write, and a real reading of ourselves."""

from __future__ import annotations

from pathlib import Path

import pytest
from adaptive_scheduler.governor.monitor import (
    Monitor,
    Psi,
    _psi_file,
    find_cgroup,
    parse_limit,
    parse_oom_kills,
    parse_psi,
    parse_stat,
)


@pytest.mark.parametrize(
    ("text", "limit"),
    [("max\n", None), ("9223372036854771712\n", None), ("314572800\n", 314572800), ("", None)],
)
def test_limits_parse_with_no_limit_as_none(text: str, limit: int | None) -> None:
    assert parse_limit(text) == limit


def test_a_stat_counter_is_read_by_name() -> None:
    assert parse_stat("cache 5\ninactive_file 4096\nactive_file 1\n", "inactive_file") == 4096
    assert parse_stat("cache 5\n", "inactive_file") == 0


def test_a_v2_cgroup_is_found_from_proc_self_cgroup(tmp_path: Path) -> None:
    base = tmp_path / "system.slice" / "asched.service"
    base.mkdir(parents=True)
    (base / "memory.max").write_text("314572800\n")
    files = find_cgroup("0::/system.slice/asched.service\n", root=tmp_path)
    assert files is not None and files.limit == base / "memory.max" and files.usage == base / "memory.current"
    assert files.pressure == base / "memory.pressure"


def test_a_v1_cgroup_is_found_under_the_memory_hierarchy(tmp_path: Path) -> None:
    base = tmp_path / "memory" / "asched"
    base.mkdir(parents=True)
    (base / "memory.limit_in_bytes").write_text("314572800\n")
    files = find_cgroup("4:memory:/asched\n1:cpu:/\n", root=tmp_path)
    assert files is not None and files.limit == base / "memory.limit_in_bytes"
    assert files.cache_key == "total_inactive_file"


def test_no_memory_cgroup_means_none(tmp_path: Path) -> None:
    assert find_cgroup("1:cpu:/\n", root=tmp_path) is None


def test_a_real_reading_of_this_process_against_a_set_budget() -> None:
    monitor = Monitor(budget_bytes=10 * 2**30)
    sample = monitor.sample()
    assert sample.budget == 10 * 2**30 and sample.budget_source == "settings"
    assert 10 * 2**20 < sample.daemon_rss < 2**30
    assert 0 < sample.percent < 10
    assert (sample.psi is None) == (monitor.psi_source is None)  # read where the kernel has PSI


PSI = (
    "some avg10=12.50 avg60=3.10 avg300=0.80 total=123456\n"
    "full avg10=4.25 avg60=1.00 avg300=0.20 total=6789\n"
)


def test_psi_avg10_is_read_for_some_and_full() -> None:
    assert parse_psi(PSI) == Psi(12.5, 4.25)
    assert parse_psi(PSI.splitlines()[0]) == Psi(12.5, 0.0)  # a file with only the "some" line


def test_the_cgroups_own_psi_is_preferred_then_the_hosts_then_none(tmp_path: Path) -> None:
    base = tmp_path / "asched.service"
    base.mkdir()
    (base / "memory.max").write_text("max\n")
    files = find_cgroup("0::/asched.service\n", root=tmp_path)
    host = tmp_path / "host-psi"
    host.write_text(PSI)
    assert files is not None and _psi_file(files, host) == host  # no memory.pressure in the cgroup
    (base / "memory.pressure").write_text(PSI)
    assert _psi_file(files, host) == base / "memory.pressure"
    host.unlink()
    (base / "memory.pressure").write_text("garbage\n")
    assert _psi_file(files, host) is None


def test_the_kernel_oom_kill_count_is_read_from_vmstat() -> None:
    assert parse_oom_kills(b"pgfault 12\noom_kill 7\nnr_foo 3\n") == 7
    assert parse_oom_kills(b"pgfault 12\nnr_foo 3\n") is None  # kernels before 4.13
    assert isinstance(Monitor(budget_bytes=2**30).oom_kills(), int)  # this machine has the line
