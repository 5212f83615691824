"""The load benchmarks' parts: the schedules producers follow, the stamps, the recovery window, and
what a job stamped twice is reported with (against a real Redis)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import redis

from bench import runqueue
from bench.burst import recovery_s
from bench.openloop import (
    MAX_SEND,
    Stamp,
    batch_schedule,
    log_detail,
    parse_stamp,
    poisson_schedule,
    twice_detail,
)


def test_poisson_schedule_has_the_rate_the_window_and_one_p0_in_ten() -> None:
    sends = poisson_schedule(1000, 2.0, 12.0, random.Random(1))
    offsets = [at for at, _, _ in sends]
    assert offsets == sorted(offsets)
    assert offsets[0] >= 2.0 and offsets[-1] < 12.0
    assert len(sends) == pytest.approx(10_000, rel=0.05)
    assert {count for _, _, count in sends} == {1}
    priorities = [priority for _, priority, _ in sends]
    assert priorities.count(0) / len(sends) == pytest.approx(0.10, abs=0.015)
    for priority in (1, 2, 3):
        assert priorities.count(priority) / len(sends) == pytest.approx(0.30, abs=0.03)


def test_poisson_schedule_is_the_same_for_the_same_seed() -> None:
    assert poisson_schedule(50, 0, 5, random.Random("16-90")) == poisson_schedule(
        50, 0, 5, random.Random("16-90")
    )


def test_batch_schedule_spaces_batches_evenly_and_sends_no_p0() -> None:
    sends = batch_schedule(1000, 10.0, 11.0, batch=100, phase=1)
    assert [round(at, 6) for at, _, _ in sends] == [round(10.0 + 0.1 * i, 6) for i in range(10)]
    assert [priority for _, priority, _ in sends] == [2, 3, 1, 2, 3, 1, 2, 3, 1, 2]
    assert sum(count for _, _, count in sends) == 1000
    assert MAX_SEND >= 100  # a late producer still sends a whole batch in one go


def test_a_stamp_reads_back_with_both_latencies() -> None:
    stamp = parse_stamp(b"0 100.0 100.004 p1-7 100.001")
    assert stamp == Stamp(0, 100.0, 100.004, "p1-7", 100.001)
    assert stamp.latency_ms == pytest.approx(4.0)
    assert stamp.from_call_ms == pytest.approx(3.0)
    assert parse_stamp(b"0 100.0 100.004 p1-7 100.001 abc-1").job_id == "abc-1"  # ours names its RQ job
    assert parse_stamp(b"0 100.0 100.004 p1-7 100.001 abc-1 4242").pid == 4242  # ... and the process


def test_a_tag_stamped_twice_is_reported_with_what_redis_holds_of_its_job(client: redis.Redis) -> None:
    client.hset("rq:job:j1", mapping={"status": "finished", "started_at": "2026-12-06T06:00:00.000000Z"})
    client.xadd("rq:results:j1", {"type": "1", "execution": "d.1"})
    client.xadd("rq:results:j1", {"type": "1", "execution": "d.9"})
    stamps = [Stamp(1, 1.0, 1.1, "75p0-3", 1.0, "j1"), Stamp(1, 1.0, 1.5, "75p0-3", 1.0, "j1")]
    stamps.append(Stamp(1, 1.0, 1.2, "75p0-4", 1.0, "j2"))  # once: not reported
    lines = twice_detail(stamps, client)
    assert lines[0].startswith("75p0-3: started at 1.100000 (j1, pid 0), 1.500000 (j1, pid 0)")
    assert "status, enqueued, started, ended ['finished', None" in lines[1]
    assert "b'd.1'" in lines[1] and "b'd.9'" in lines[1]  # two outcomes written: it ran twice
    assert len(lines) == 2


def test_the_log_lines_naming_a_job_stamped_twice_and_the_last_warnings_are_kept(tmp_path: Path) -> None:
    log = tmp_path / "ours.log"
    log.write_text("INFO job j1 claimed\nINFO job j2 claimed\nWARNING slot 0 reported an outcome for j1\n")
    lines = log_detail(log, {"j1"})
    assert lines[0] == "  log lines naming the job: 2"
    assert lines[1:3] == ["    INFO job j1 claimed", "    WARNING slot 0 reported an outcome for j1"]
    assert lines[3] == "  warnings and errors in the log: 1 (the last 1)"
    assert log_detail(tmp_path / "absent.log", {"j1"}) == []


def stamps_at(sent_at: float, latency_ms: float, n: int = 10) -> list[Stamp]:
    return [Stamp(1, sent_at, sent_at + latency_ms / 1000, f"t{sent_at}-{i}", sent_at) for i in range(n)]


def test_recovery_is_the_first_one_second_window_back_within_the_threshold() -> None:
    stamps = stamps_at(100.2, 50) + stamps_at(101.3, 30) + stamps_at(102.5, 3) + stamps_at(103.5, 2)
    assert recovery_s(stamps, drained_at=100.0, end=104.0, threshold_ms=10) == pytest.approx(2.0)
    assert recovery_s(stamps, drained_at=102.0, end=104.0, threshold_ms=10) == pytest.approx(0.0)


def test_no_recovery_when_no_window_gets_back_within_the_threshold() -> None:
    stamps = stamps_at(100.2, 50) + stamps_at(101.3, 30)
    assert recovery_s(stamps, drained_at=100.0, end=102.0, threshold_ms=10) is None


def test_run_queue_figures_of_this_process() -> None:
    before = runqueue.read([os.getpid(), 2**22 + 1])  # the second pid does not exist: left out
    assert list(before) == [os.getpid()]
    sum(range(200_000))
    wait_ns, slices = runqueue.totals(before, runqueue.read([os.getpid()]))
    assert wait_ns >= 0 and slices >= 0
    assert runqueue.wait_per_slice_us(3_000_000, 1000) == pytest.approx(3.0)
    assert runqueue.wait_per_slice_us(5, 0) is None
