"""The soak benchmark's code path, short: about 7 s of mixed load with pressure spikes, then the
accounting and the leak checks `python -m bench.soak --minutes 10` reports on."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import soak


@pytest.mark.timeout(90)
def test_a_short_soak_accounts_for_every_job_and_leaks_nothing(redis_url: str, tmp_path: Path) -> None:
    config = soak.Config(
        minutes=0.12, sample_every_s=1.0, warmup_s=2.5, spike_every_s=3.0, drain_timeout_s=40
    )
    report = soak.run(config, redis_url=redis_url, workdir=tmp_path)
    print(f"\n{soak.table(report)}")
    summary, jobs = report["summary"], report["jobs"]
    # every job accounted for: ended (finished, failed, shed, skipped) or still waiting, none lost
    assert report["drained_s"] >= 0, jobs
    assert summary["lost"] == 0 and summary["waiting"] == 0, jobs
    p0 = jobs["by_priority"]["P0"]
    assert p0.get("finished", 0) == sum(p0.values()) > 0, p0  # P0 is never skipped, shed nor stopped
    assert jobs.get("finished", 0) > jobs["enqueued"] / 2, jobs
    # the spikes really pressed: HIGH or EMERGENCY reached
    assert report["log"]["to HIGH"] + report["log"]["to EMERGENCY"] >= 1, report["log"]
    # no leak: threads and children flat after the warm-up, no zombie lingers; descriptors flat but for
    # the two each slot costs the daemon (its link and pidfd): a slot replaced while the P0 lane opens
    # holds four more at one sample (seen once in four runs beside other tests: 16-19, end 17), and
    # none may be left at the end
    assert summary["threads"]["max"] - summary["threads"]["min"] <= 2, summary["threads"]
    fds = summary["fds"]
    assert fds["max"] - fds["min"] <= 4 and fds["end"] - fds["warm"] <= 2, fds
    children = summary["children"]
    # two slots, and the P0 lane when open; a slot replaced (or the lane opened again) may overlap its
    # predecessor's exit at one sample (seen once in a fresh-clone CI run: max 4, end 3): one extra at
    # most, and none left at the end
    most = summary["children_at_most"]
    assert children["min"] >= 2 and children["max"] <= 4 and children["end"] <= 3, (children, most)
    assert summary["zombies_max"] <= 1, summary
    assert summary["rss_growth_percent"] < 10, summary
    # every key the daemon writes has a TTL or is one expected to have none
    assert not report["keys_running"]["unexpected"], report["keys_running"]
    assert report["log"]["errors"] == 0 and report["log"]["tracebacks"] == 0, report["log"]
    assert report["exit_code"] == 0
