"""A real daemon's metrics through a real StatsD (Etsy's, from npm) into what Graphite would store.

StatsD runs with a 500 ms flush and its graphite backend pointed at a TCP socket this test listens on
(Graphite's plaintext protocol, `path value timestamp` per line), with `legacyNamespace: false`: the
names are the ones the Grafana dashboard (systemd/grafana-dashboard.json) charts. One daemon run,
shared by the tests of this module, does a normal phase (P1 jobs, failing P2 jobs), a circuit breaker
phase (a flaky task retried, failing, deferred, then closing its breaker), a memory phase (two plain
jobs of an unprofiled task that do not fit together: one is stopped and runs again) and a storm (a P0
job taking the whole budget: preempted, resumed, shed, put back and skipped jobs), with a periodic
P3 heartbeat every second throughout (run, and skipped under pressure), so that every series the
dashboard charts is really flushed.

`./dev test` installs StatsD into .statsd/ (npm); without node or that package these tests fail.
"""

from __future__ import annotations

import json
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from adaptive_scheduler.governor.monitor import Monitor
from adaptive_scheduler.metrics import CATALOGUE, expand_prefix
from adaptive_scheduler.redis_server import RedisServer
from rq import Retry
from rq.job import Job

from tests.graphite_targets import (
    alias_by_node,
    catalogue_regex,
    expand_variables,
    find_calls,
    load_dashboard,
    parse,
    paths,
    select,
    targets,
)
from tests.helpers import ROOT, queue, running_daemon, wait_until

STATSD_JS = ROOT / ".statsd" / "node_modules" / "statsd" / "stats.js"
FLUSH_MS = 500
PREFIX = "asched"  # the dashboard's $prefix: statsd_prefix up to ".{host}"
SETTINGS = {
    "ASCHED_MEMORY_BUDGET": "300MB",  # 286 MiB; the daemon holds about 46
    "ASCHED_PRESSURE_HOLD_S": "0.5",
    "ASCHED_PREEMPT_GRACE_S": "1",
    "ASCHED_BREAKER_COOLDOWN_S": "4",  # the breaker phase's deferred job waits this long: over one
    # housekeeping round (2.5 s), which publishes the status and flushes the gauges, so both show it
    "ASCHED_PERIODIC": json.dumps([{"name": "beat", "task": "heartbeat", "every_s": 1, "priority": "P3"}]),
}


class FakeGraphite:
    """A TCP socket speaking Graphite's plaintext protocol: keeps every `path value timestamp` line."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.05)
        self.port = self.server.getsockname()[1]
        self.points: dict[str, list[float]] = defaultdict(list)
        self.flushes = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="fake-graphite", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            with conn:
                self._fold(read_all(conn).decode("ascii"))

    def _fold(self, text: str) -> None:
        with self.lock:
            for line in text.splitlines():
                path, value, _ts = line.split(" ")
                self.points[path].append(float(value))
            self.flushes += 1

    def snapshot(self) -> Flushed:
        with self.lock:
            return Flushed({path: list(values) for path, values in self.points.items()}, self.flushes)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.server.close()


@dataclass
class Flushed:
    """What StatsD flushed to Graphite: each series' values, oldest first."""

    points: dict[str, list[float]]
    flushes: int
    host: str = ""
    jobs: dict[str, Job] = field(default_factory=dict)

    @property
    def series(self) -> set[str]:
        return set(self.points)

    def total(self, name: str, kind: str = "counters", stat: str = "count") -> float:
        """A counter's `.count` (or a timer's `stat`) summed over every flush: 0 if never flushed."""
        return sum(self.points.get(f"stats.{kind}.{PREFIX}.{self.host}.{name}.{stat}", []))

    def gauge(self, name: str) -> list[float]:
        return self.points.get(f"stats.gauges.{PREFIX}.{self.host}.{name}", [])

    def timer(self, name: str, stat: str) -> list[float]:
        return self.points.get(f"stats.timers.{PREFIX}.{self.host}.{name}.{stat}", [])


def read_all(conn: socket.socket) -> bytes:
    """Everything a StatsD flush sends on its connection (it closes it when done)."""
    conn.settimeout(5)
    chunks = []
    while chunk := conn.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Statsd:
    """Etsy's StatsD (node) on a free UDP port, flushing every FLUSH_MS to `graphite_port`."""

    def __init__(self, graphite_port: int, directory: Path) -> None:
        node = shutil.which("node")
        if node is None or not STATSD_JS.is_file():
            pytest.fail(
                f"StatsD is not installed (node: {node or 'missing'}, {STATSD_JS}: "
                f"{'found' if STATSD_JS.is_file() else 'missing'}); `./dev test` installs it "
                "(npm install --prefix .statsd statsd)",
                pytrace=False,
            )
        self.port, self.mgmt_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
        config = directory / "statsd-config.js"
        config.write_text(
            f'{{ address: "127.0.0.1", port: {self.port}, mgmt_address: "127.0.0.1", '
            f"mgmt_port: {self.mgmt_port}, flushInterval: {FLUSH_MS}, "
            f'backends: ["./backends/graphite"], graphiteHost: "127.0.0.1", graphitePort: {graphite_port}, '
            "graphite: { legacyNamespace: false } }\n"
        )
        self.log = (directory / "statsd.log").open("w+")
        self.process = subprocess.Popen(
            [node, str(STATSD_JS), str(config)], stdout=self.log, stderr=subprocess.STDOUT
        )
        wait_until(lambda: self._healthy() or self.process.poll() is not None, 10)
        assert self.process.poll() is None, f"StatsD exited: {self.output()}"
        self.url = f"udp://127.0.0.1:{self.port}"

    def _healthy(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.mgmt_port), timeout=1) as conn:
                conn.sendall(b"health\n")
                return conn.recv(100).startswith(b"health: up")
        except OSError:
            return False

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def outcome(client: redis.Redis, job: Job) -> str:
    """The job's RQ status, or the daemon's outcome for a job it skipped or shed."""
    fields = client.hmget(f"rq:job:{job.id}", "asched_outcome", "status")
    return (fields[0] or fields[1] or b"").decode()


def run_workload(client: redis.Redis, output: Callable[[], str], directory: Path) -> dict[str, Job]:
    """Three phases, one after the other; returns the jobs by role once every one has ended."""
    jobs = normal_phase(client)
    jobs |= breaker_phase(client, directory / "dependency-down")
    jobs |= memory_phase(client)
    jobs |= storm_phase(client, output)
    return jobs


def normal_phase(client: redis.Redis) -> dict[str, Job]:
    """20 P1 jobs finish; 3 P2 jobs fail (the third failure opens `fail`'s breaker, with no job left)."""
    jobs = {f"add{i}": queue(client, 1).enqueue("tests.fixtures.jobs.add", i, 1) for i in range(20)}
    jobs |= {f"fail{i}": queue(client, 2).enqueue("tests.fixtures.jobs.fail", "boom") for i in range(3)}
    wait_until(lambda: all(outcome(client, j) in ("finished", "failed") for j in jobs.values()), 20)
    return jobs


def breaker_phase(client: redis.Redis, down: Path) -> dict[str, Job]:
    """A flaky task fails 3 times (a P3 job retried once, a P2 job): its breaker opens; the next job
    is deferred, runs as the trial once the dependency is back, and closes the breaker."""
    down.touch()
    jobs = {
        "retried": queue(client, 3).enqueue("tests.fixtures.jobs.fail_while", str(down), retry=Retry(max=1))
    }
    wait_until(lambda: outcome(client, jobs["retried"]) == "failed")
    jobs["tripped"] = queue(client, 2).enqueue("tests.fixtures.jobs.fail_while", str(down))
    wait_until(lambda: outcome(client, jobs["tripped"]) == "failed")
    jobs["trial"] = queue(client, 2).enqueue("tests.fixtures.jobs.fail_while", str(down))
    wait_until(lambda: outcome(client, jobs["trial"]) == "scheduled")
    # both breakers are open now, for the cooldown at least: the daemon publishes it (and flushes the
    # sampled `breakers.open` gauge in the same housekeeping round) before the dependency is back
    wait_until(lambda: breakers_published(client) == 2, timeout_s=15)
    down.unlink()
    wait_until(lambda: outcome(client, jobs["trial"]) == "finished")
    return jobs


def breakers_published(client: redis.Redis) -> int:
    """How many breakers the daemon's last published status shows open or half-open."""
    statuses = [
        json.loads(raw) for raw in client.mget(list(client.scan_iter(match="asched:status:*"))) if raw
    ]
    return max((len(status["breakers"]) for status in statuses), default=0)


def memory_phase(client: redis.Redis) -> dict[str, Job]:
    """Two plain P2 jobs of a task with no memory profile yet start together (each is assumed to need a
    quarter of the budget); together they pass HIGH, so one is stopped for memory, waits until the
    other has finished (its task now has a profile), and runs again."""
    jobs = {f"big{i}": queue(client, 2).enqueue("tests.fixtures.jobs.allocate", 110, 2.0) for i in range(2)}
    wait_until(lambda: all(outcome(client, j) == "finished" for j in jobs.values()), 30)
    return jobs


def storm_phase(client: redis.Redis, output: Callable[[], str]) -> dict[str, Job]:
    """A checkpointing P1 job and a short P0 job in the two slots; waiting locally a P3 heartbeat, a
    P2 job past its deadline, a P2 job, and a P0 job that takes the whole budget (EMERGENCY)."""
    jobs = {"long_sum": queue(client, 1).enqueue("tests.fixtures.jobs.long_sum", 1_500_000, 100_000, 0.1)}
    wait_until(lambda: outcome(client, jobs["long_sum"]) == "started")
    jobs["sleep"] = queue(client, 0).enqueue("tests.fixtures.jobs.sleep", 1.5)
    wait_until(lambda: outcome(client, jobs["sleep"]) == "started")
    jobs["beat"] = queue(client, 3).enqueue("tests.fixtures.jobs.heartbeat")
    jobs["late"] = queue(client, 2).enqueue("tests.fixtures.jobs.add", 1, 2, meta={"deadline": time.time()})
    jobs["p2"] = queue(client, 2).enqueue("tests.fixtures.jobs.add", 2, 3)
    jobs["hog"] = queue(client, 0).enqueue("tests.fixtures.jobs.allocate", 250, 1.5)
    wait_until(lambda: "-> EMERGENCY" in output(), 15)
    # A P1 heartbeat waits in Redis until the level falls to HIGH, where it is claimed and skipped
    jobs["beat1"] = queue(client, 1).enqueue("tests.fixtures.jobs.heartbeat")
    ended = ("finished", "failed", "skipped", "shed")
    wait_until(lambda: all(outcome(client, j) in ended for j in jobs.values()), 30)
    return jobs


@pytest.fixture(scope="module")
def flushed(redis_server: RedisServer) -> Iterator[Flushed]:
    """One daemon run's metrics as StatsD flushed them to Graphite."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    graphite = FakeGraphite()
    try:
        with tempfile.TemporaryDirectory(prefix="asched-statsd-") as directory:
            statsd = Statsd(graphite.port, Path(directory))
            try:
                result = run_daemon(client, redis_server.url, statsd.url, graphite, Path(directory))
            finally:
                statsd.stop()
    finally:
        graphite.close()
        client.flushdb()
        client.close()
    yield result


def run_daemon(
    client: redis.Redis, redis_url: str, statsd_url: str, graphite: FakeGraphite, directory: Path
) -> Flushed:
    env = {**SETTINGS, "ASCHED_STATSD_URL": statsd_url, "ASCHED_STATSD_PREFIX": PREFIX + ".{host}"}
    host = expand_prefix("{host}")
    finished = f"stats.counters.{PREFIX}.{host}.jobs.finished.p1.count"
    with running_daemon(redis_url, env=env) as daemon:
        jobs = run_workload(client, daemon.output, directory)
        # the daemon flushes counters every second, StatsD every 500 ms: wait for the last job's
        # count, then for more StatsD flushes so that nothing is in flight
        wait_until(lambda: sum(graphite.snapshot().points.get(finished, [])) >= 21, 10)
        seen = graphite.snapshot().flushes
        wait_until(lambda: graphite.snapshot().flushes >= seen + 3, 10)
    result = graphite.snapshot()
    result.host, result.jobs = host, jobs
    return result


def test_counters_arrive_summed_per_flush_with_per_second_rates(flushed: Flushed) -> None:
    assert flushed.total("jobs.finished.p1") == 21  # 20 adds and the checkpointing sum
    assert flushed.total("jobs.failed.p2") == 4  # 3 fail, 1 flaky
    assert flushed.total("jobs.retried.p3") == 1 and flushed.total("jobs.failed.p3") == 1
    # P3 also runs the periodic heartbeats: every one that finished started once
    assert flushed.total("jobs.started.p3") == 2 + flushed.total("jobs.finished.p3")
    fired, skipped = flushed.total("periodic.fired"), flushed.total("periodic.skipped")
    assert skipped >= 1  # ticks while ELEVATED or above
    assert fired + skipped >= 4  # a tick a second; the run lasts over 5 s
    assert flushed.total("jobs.enqueued.p3") == fired and flushed.total("jobs.finished.p3") >= 1
    assert flushed.total("jobs.finished.p0") == 2 and flushed.total("jobs.started.p0") == 2
    assert flushed.total("jobs.finished.p2") == 2 + 2  # the breaker's trial, the job put back, the big ones
    assert flushed.total("jobs.started.p2") == 3 + 2 + 1 + 3  # one of the big ones ran twice
    assert flushed.total("jobs.stopped.p2") == 1  # ... stopped for memory once, then run again
    # the flaky task's breaker opened, deferred a job, closed after its trial; `fail`'s stays open
    assert flushed.total("breaker.opened") == 2 and flushed.total("breaker.closed") == 1
    assert flushed.total("jobs.deferred.p2") >= 1
    assert max(flushed.gauge("breakers.open")) == 2 and flushed.gauge("breakers.open")[-1] == 1
    # the P1 sum was preempted (for the P0 job or by EMERGENCY), resumed each time, and finished
    preempted = flushed.total("jobs.preempted.p1")
    assert preempted >= 1 and flushed.total("jobs.resumed.p1") == preempted
    assert flushed.total("jobs.started.p1") == 21 + preempted
    assert flushed.total("jobs.shed.p2") == 1  # past its deadline at EMERGENCY
    assert flushed.total("jobs.put_back.p2") >= 1
    assert flushed.total("jobs.skipped.p1") == 1  # the P1 heartbeat, claimed at HIGH or ELEVATED
    assert flushed.total("jobs.skipped.p3") + flushed.total("jobs.shed.p3") >= 1  # the P3 heartbeat
    # StatsD's rate is the flush's count per second
    for name in ("jobs.finished.p1", "jobs.started.p1", "jobs.failed.p2"):
        base = f"stats.counters.{PREFIX}.{flushed.host}.{name}"
        rates, counts = flushed.points[f"{base}.rate"], flushed.points[f"{base}.count"]
        assert rates == [pytest.approx(c * 1000 / FLUSH_MS) for c in counts]
    assert sum(flushed.points["stats.counters.statsd.bad_lines_seen.count"]) == 0


def test_timers_count_every_start_and_run(flushed: Flushed) -> None:
    for p in ("p0", "p1", "p2", "p3"):  # one wait per start
        assert flushed.total(f"jobs.wait.{p}", "timers") == flushed.total(f"jobs.started.{p}")
    assert all(0 <= ms < 10_000 for ms in flushed.timer("jobs.wait.p1", "upper"))
    assert flushed.total("tasks.add.run", "timers") == 21  # the shed one never ran
    assert flushed.total("tasks.fail.run", "timers") == 3
    assert flushed.total("tasks.fail_while.run", "timers") == 4  # retried: twice; tripped; trial
    assert flushed.total("tasks.heartbeat.run", "timers") == flushed.total("jobs.finished.p3")
    assert flushed.total("tasks.long_sum.run", "timers") == 1  # preempted runs are not timed
    assert 1500 <= max(flushed.timer("tasks.sleep.run", "upper")) < 5000
    assert 1500 <= max(flushed.timer("tasks.allocate.run", "upper_90")) < 10_000
    assert all(0 <= ms < 1000 for ms in flushed.timer("tasks.add.run", "mean"))


def test_task_memory_gauges_follow_the_learned_profiles(flushed: Flushed) -> None:
    # every task that ran has gauges under its @task name; `allocate` last ran as the 250 MB hog, and
    # one of its 110 MB runs was stopped for memory
    ran = {"add", "fail", "fail_while", "allocate", "long_sum", "sleep", "heartbeat"}
    named = {name.split(".")[-3] for name in flushed.series if name.endswith(".memory.stops")}
    assert {"add", "allocate"} <= named <= ran
    predicted = flushed.gauge("tasks.allocate.memory.predicted_bytes")
    last_peak = flushed.gauge("tasks.allocate.memory.last_peak_bytes")
    assert predicted[-1] >= last_peak[-1] > 200 * 2**20
    assert flushed.gauge("tasks.allocate.memory.stops")[-1] == 1


def test_gauges_show_slots_memory_and_the_storm(flushed: Flushed) -> None:
    total, busy = flushed.gauge("slots.total"), flushed.gauge("slots.busy")
    assert total[0] == 2 and set(total) <= {2, 3}  # 3 while a P0 lane is open
    assert max(busy) >= 2 and min(busy) == 0 and all(b <= t for b, t in zip(busy, total, strict=True))
    percent, level = flushed.gauge("pressure.percent"), flushed.gauge("pressure.level")
    assert min(percent) < 70 and max(percent) >= 95
    assert level[0] == 0 and max(level) == 3 and set(level) <= {0, 1, 2, 3}  # sampled once a second
    assert set(flushed.gauge("memory.budget_bytes")) == {300_000_000}
    assert min(flushed.gauge("memory.daemon.rss_bytes")) > 10 * 2**20
    slots = {name.split(".")[-2] for name in flushed.series if name.endswith(".growth_bytes")}
    assert {"0", "1"} <= slots  # and "2" if a P0 lane opened
    assert max(max(flushed.gauge(f"memory.slot.{n}.growth_bytes")) for n in slots) > 200 * 2**20  # 250 MiB
    # (the median: a flush that caught a slot being replaced read its successor at fork, or nothing)
    assert all(statistics.median(flushed.gauge(f"memory.slot.{n}.rss_bytes")) > 10 * 2**20 for n in (0, 1))
    assert max(flushed.gauge("memory.used_bytes")) > 0.95 * 300_000_000
    assert all(set(flushed.gauge(f"queue.local.p{p}")) <= set(range(33)) for p in range(4))  # max depth 32
    assert all(flushed.gauge(f"queue.redis.p{p}") for p in range(4))
    assert max(flushed.gauge("queue.redis.p2")) >= 1  # put back in Redis for the storm


def test_every_dashboard_target_matches_series_statsd_really_flushed(flushed: Flushed) -> None:
    values = {"prefix": PREFIX, "host": flushed.host}
    unmatched = [
        f"{target.panel} / {target.ref_id}: {pattern}"
        for target in targets(load_dashboard())
        for pattern in paths(parse(expand_variables(target.expression, values)))
        if not select(pattern, flushed.series)
    ]
    assert not unmatched, "targets matching no flushed series:\n" + "\n".join(unmatched)


def test_every_target_gives_each_series_its_own_legend(flushed: Flushed) -> None:
    values = {"prefix": PREFIX, "host": flushed.host}
    for target in targets(load_dashboard()):
        expression = parse(expand_variables(target.expression, values))
        series = sorted(set().union(*(select(pattern, flushed.series) for pattern in paths(expression))))
        for call in find_calls(expression, "aliasByNode"):
            nodes = tuple(int(n) for n in call.args[1:])  # type: ignore[call-overload]
            legends = [alias_by_node(name, nodes) for name in series]
            assert len(set(legends)) == len(legends), f"{target.panel}: {legends}"
            assert not {PREFIX, flushed.host} & {part for legend in legends for part in legend.split(".")}
        if next(find_calls(expression, "alias"), None) is not None:
            assert len(series) == 1, f"{target.panel} / {target.ref_id}: one alias for {series}"


def test_the_host_variable_finds_this_daemon(flushed: Flushed) -> None:
    variable = next(v for v in load_dashboard()["templating"]["list"] if v["name"] == "host")
    query = expand_variables(variable["query"]["target"], {"prefix": PREFIX})
    depth = query.count(".") + 1
    nodes = {".".join(name.split(".")[:depth]) for name in flushed.series if name.count(".") >= depth}
    found = {node.split(".")[-1] for node in select(query, nodes)}
    assert found == {flushed.host}


def test_every_catalogue_metric_arrives_and_is_charted(flushed: Flushed) -> None:
    head = f"{PREFIX}.{flushed.host}."
    values = {"prefix": PREFIX, "host": flushed.host}
    charts = [
        p for t in targets(load_dashboard()) for p in paths(parse(expand_variables(t.expression, values)))
    ]
    sent, charted = set(), set()
    for name, (kind, _meaning) in CATALOGUE.items():
        series = {s for s in flushed.series if catalogue_regex(head + name, kind).fullmatch(s)}
        sent |= {name} if series else set()
        charted |= {name} if any(select(chart, series) for chart in charts) else set()
    expected = set(CATALOGUE)
    if Monitor(None).psi_source is None:  # a kernel without PSI: the daemon has none to send
        expected -= {"memory.psi.some_avg10", "memory.psi.full_avg10"}
    assert sent == expected, f"not sent in this run (make the workload send them): {expected - sent}"
    assert charted == sent, f"sent but charted by no panel: {sent - charted}"
