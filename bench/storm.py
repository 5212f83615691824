"""Memory storm: a mixed P0-P3 workload asking about twice the memory budget, on adaptive-scheduler and
on `rq worker` (2 processes), each inside the same cgroup memory limit, one after the other.

Workload (15 s of arrivals): a P0 job every 0.15 s (20 MiB for 0.1 s; 100 of them), two P1
checkpointing sums, four P2 jobs of 300 MiB and two P3 jobs of 250 MiB allocated in ten steps (two of
those at once are more than the 400 MiB limit), and a heartbeat every 0.45 s.

The P0 wait (start minus enqueue) is compared with two runs without the storm, made in every round:
- "ample memory": the same workload under a limit four times larger, so that no level is reached:
  the same jobs competing for the same two cores, only the memory storm is gone. The issue's goal
  ("P0 p99 wait versus the same workload without the storm") is judged against this one;
- "P0 alone": the P0 jobs and heartbeats only, a stricter baseline that also removes the other jobs'
  CPU.
Each round runs the three (alone, ample, storm) back to back; the p99s are of the waits pooled over
all rounds (300 waits for 3 rounds), so that one run's second-largest wait does not decide the ratio.

Reported: peak pressure, OOM kills (the cgroup's oom_kill counter), jobs lost (not finished, failed,
skipped or shed when the run ends), P0 completion and waits, counts of skips, preemptions, resumes
and sheds, the delay from a threshold crossing (first external sample at or above it) to the daemon's
action (the preemption asked) and to its effect (the job checkpointed, its slot freed), and how long
the producer's own P0 enqueue calls took. The pressure is sampled from outside every 100 ms the way
the daemon computes it under a cgroup (usage minus inactive file cache, over the limit). Then the
storm on `rq worker` x2, once. Writes bench/results/storm.md and storm.png (the last storm round).

    python -m bench.storm [--limit-mib 400] [--rounds 3] [--keep-logs DIR]
    (root, with a writable cgroup v1 memory controller)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import redis
from adaptive_scheduler.governor.monitor import parse_stat
from adaptive_scheduler.redis_server import RedisServer
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from tests.helpers import FIXTURES

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
V1 = Path("/sys/fs/cgroup/memory")
TERMINAL = {"finished", "failed", "canceled"}
# One `rq worker` (fork per job) on the P0-P3 queues in priority order; {URL} is replaced by the Redis URL.
RQ_WORKER = [
    sys.executable,
    *("-m", "rq.cli", "worker", "--url", "{URL}"),
    *("--serializer", "rq.serializers.JSONSerializer", "p0", "p1", "p2", "p3"),
]


@dataclass
class Run:
    name: str
    samples: list[tuple[float, float]] = field(default_factory=list)  # (unix s, pressure %)
    jobs: dict[str, list[str]] = field(default_factory=dict)  # priority -> job ids
    oom_kills: int = 0
    log: str = ""
    started: float = 0.0
    enqueue_ms: list[float] = field(default_factory=list)  # the producer's P0 enqueue calls


class Cgroup:
    """A v1 memory cgroup with a limit, its OOM counter and its usage as the daemon reads it."""

    def __init__(self, limit: int) -> None:
        self.path = V1 / f"asched-storm-{uuid.uuid4().hex[:8]}"
        self.path.mkdir()
        (self.path / "memory.limit_in_bytes").write_text(str(limit))
        self.limit = limit

    def pressure(self) -> float:
        usage = int((self.path / "memory.usage_in_bytes").read_text())
        cache = parse_stat((self.path / "memory.stat").read_text(), "total_inactive_file")
        return 100.0 * (usage - cache) / self.limit

    def oom_kills(self) -> int:
        stats = dict(line.split() for line in (self.path / "memory.oom_control").read_text().splitlines())
        return int(stats.get("oom_kill", 0))

    def launch(self, command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        joined = ["sh", "-c", f'echo $$ > {self.path}/cgroup.procs && exec "$0" "$@"', *command]
        with log.open("ab") as out:
            return subprocess.Popen(
                joined, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def pids(self) -> list[int]:
        return [int(pid) for pid in (self.path / "cgroup.procs").read_text().split()]

    def remove(self) -> None:
        """Wait up to 10 s for the processes launched into it to leave, SIGKILL what is left, rmdir."""
        for _ in range(100):
            if not self.pids():
                break
            time.sleep(0.1)
        for pid in self.pids():  # only what we launched into it (and their children) can be here
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for _ in range(50):
            if not self.pids():
                break
            time.sleep(0.1)
        self.path.rmdir()


def workload(client: redis.Redis, mixed: bool, enqueue_ms: list[float]) -> dict[str, list[str]]:
    """Enqueue the arrivals over ~15 s (blocking), the P1-P3 jobs only if `mixed`; returns the job ids
    per priority. Appends to
    `enqueue_ms` how long each P0 enqueue call took the producer (part of that job's wait)."""
    queues = {p: Queue(f"p{p}", connection=client, serializer=JSONSerializer) for p in range(4)}
    jobs: dict[str, list[str]] = {"P0": [], "P1": [], "P2": [], "P3": [], "heartbeat": []}
    if mixed:
        jobs["P1"] += [
            queues[1].enqueue("tests.fixtures.jobs.long_sum", 3_000_000, 100_000, 0.05).id for _ in range(2)
        ]
    for tick in range(100):  # 0.15 s apart: 15 s
        if mixed and tick == 13:
            jobs["P2"] += [
                queues[2].enqueue("tests.fixtures.jobs.allocate_steps", 300, 10, 0.2).id for _ in range(4)
            ]
        if mixed and tick == 27:
            jobs["P3"] += [
                queues[3].enqueue("tests.fixtures.jobs.allocate_steps", 250, 10, 0.2).id for _ in range(2)
            ]
        called = time.perf_counter()
        jobs["P0"].append(queues[0].enqueue("tests.fixtures.jobs.allocate", 20, 0.1).id)
        enqueue_ms.append((time.perf_counter() - called) * 1000)
        if tick % 3 == 0:
            jobs["heartbeat"].append(queues[3].enqueue("tests.fixtures.jobs.heartbeat").id)
        time.sleep(0.15)
    return jobs


def sample(cgroup: Cgroup, samples: list[tuple[float, float]], stop: threading.Event) -> None:
    """Append (unix s, pressure %) every 100 ms until `stop` is set."""
    while not stop.is_set():
        samples.append((time.time(), cgroup.pressure()))
        stop.wait(0.1)


def stop_processes(processes: list[subprocess.Popen[bytes]], timeout_s: float = 30.0) -> None:
    """SIGTERM each process, then SIGKILL the ones that have not exited within `timeout_s`."""
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def all_ended(client: redis.Redis, jobs: dict[str, list[str]]) -> bool:
    ids = [i for group in jobs.values() for i in group]
    with client.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hget(f"rq:job:{job_id}", "status")
        return all((s or b"").decode() in TERMINAL for s in pipe.execute())


def run_system(
    name: str,
    command: list[list[str]],
    env: dict[str, str],
    limit: int,
    mixed: bool,
    tmp: Path,
    keep_logs: Path | None,
) -> tuple[Run, redis.Redis, RedisServer]:
    slug = name.replace(" ", "-")  # in paths: RQ's --url must not hold a space
    server = RedisServer(tmp / f"redis-{slug}", persistent=False).start()
    client = redis.Redis.from_url(server.url)
    cgroup = Cgroup(limit)
    run = Run(name, started=time.time())
    log = tmp / f"{slug}.log"
    env = {**env, "ASCHED_REDIS_URL": server.url}
    processes = [cgroup.launch([c.replace("{URL}", server.url) for c in cmd], env, log) for cmd in command]
    stop = threading.Event()
    sampler = threading.Thread(target=sample, args=(cgroup, run.samples, stop), daemon=True)
    try:
        time.sleep(2.0)  # consumers up
        sampler.start()
        run.jobs = workload(client, mixed, run.enqueue_ms)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not all_ended(client, run.jobs):
            time.sleep(0.5)
        time.sleep(0.5)
    finally:
        stop.set()
        stop_processes(processes)
        run.oom_kills = cgroup.oom_kills()
        cgroup.remove()
        run.log = log.read_text(errors="replace")
        if keep_logs:
            (keep_logs / f"{slug}.log").write_text(run.log)
    return run, client, server


def job_facts(client: redis.Redis, job_ids: list[str]) -> list[dict[str, object]]:
    facts = []
    for job_id in job_ids:
        job = Job.fetch(job_id, connection=client, serializer=JSONSerializer)
        outcome = (client.hget(job.key, "asched_outcome") or b"").decode()
        wait = (
            (job.started_at - job.enqueued_at).total_seconds() if job.started_at and job.enqueued_at else None
        )
        facts.append({"status": job.get_status().value, "outcome": outcome, "wait_s": wait})
    return facts


def p99(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, int(len(ordered) * 0.99 + 0.999) - 1)]


LOG_LINE = re.compile(r"^(\d\d:\d\d:\d\d\.\d\d\d) +\w+ +\S+ (.*)$")


def events(run: Run) -> list[tuple[float, str, str]]:
    """(unix s, kind, text) from the daemon's log: level changes, preemptions, skips, sheds."""
    day = dt.datetime.fromtimestamp(run.started, dt.UTC).date()
    found = []
    for line in run.log.splitlines():
        match = LOG_LINE.match(line)
        if not match:
            continue
        clock, text = match.groups()
        at = dt.datetime.combine(day, dt.time.fromisoformat(clock), dt.UTC).timestamp()
        for kind, needle in (
            ("level", "memory pressure"),
            ("preempt-asked", "preempting slot"),
            ("preempted", "preempted ("),
            ("skip", "skipped:"),
            ("shed", "shed:"),
        ):
            if needle in text:
                found.append((at, kind, text))
    return found


def action_delays(run: Run, thresholds: dict[str, float], kind: str) -> list[tuple[str, float]]:
    """For each crossing of HIGH/EMERGENCY seen from outside: ms until the next `kind` event
    ("preempt-asked": the daemon signalled the job; "preempted": the job checkpointed, its slot freed)."""
    done = [at for at, found, _ in events(run) if found == kind]
    delays = []
    for level, threshold in thresholds.items():
        above = False
        for at, pressure in run.samples:
            if pressure >= threshold and not above:
                later = [d for d in done if d >= at - 0.2]  # the daemon's own reading may see it first
                if later:
                    delays.append((level, (later[0] - at) * 1000))
            above = pressure >= threshold
    return delays


def plot(run: Run, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = run.samples[0][0]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for low, high, colour, label in (
        (70, 85, "#fff3c4", "ELEVATED"),
        (85, 95, "#ffd8a8", "HIGH"),
        (95, 130, "#ffb3b3", "EMERGENCY"),
    ):
        ax.axhspan(low, high, color=colour, label=label, zorder=0)
    ax.plot(
        [t - start for t, _ in run.samples],
        [p for _, p in run.samples],
        color="#1c4e80",
        lw=1.4,
        label="pressure (cgroup usage / limit)",
    )
    markers = {
        "skip": ("x", "#7a7a7a", "heartbeat skipped"),
        "preempt-asked": ("v", "#d9480f", "preempt asked"),
        "preempted": ("o", "#c92a2a", "preempted (slot freed)"),
        "shed": ("s", "#5f3dc4", "shed"),
    }
    for kind, (marker, colour, label) in markers.items():
        times = [at - start for at, k, _ in events(run) if k == kind]
        if times:
            ax.scatter(
                times,
                [5] * len(times) if kind == "skip" else [100] * len(times),
                marker=marker,
                color=colour,
                label=f"{label} ({len(times)})",
                zorder=3,
            )
    ax.set_xlabel("seconds")
    ax.set_ylabel("memory pressure %")
    ax.set_ylim(0, 125)
    ax.set_title("adaptive-scheduler in a memory storm (cgroup limit, workload asks ~2x)")
    ax.legend(loc="upper right", fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def summarise(name: str, run: Run, client: redis.Redis) -> dict[str, object]:
    """One row of the main table; `_waits` (P0 waits, ms) and `_enqueue_ms` are for pooling."""
    facts = {group: job_facts(client, ids) for group, ids in run.jobs.items()}
    everything = [f for group in facts.values() for f in group]
    p0 = facts["P0"]
    waits = sorted(float(f["wait_s"]) * 1000 for f in p0 if f["wait_s"] is not None)  # type: ignore[arg-type]
    found = events(run)
    return {
        "run": name,
        "peak pressure %": max(p for _, p in run.samples) if run.samples else 0.0,
        "OOM kills": run.oom_kills,
        "jobs": len(everything),
        "lost": sum(1 for f in everything if f["status"] not in TERMINAL),
        "failed": sum(1 for f in everything if f["status"] == "failed"),
        "P0 done": f"{sum(1 for f in p0 if f['status'] == 'finished')}/{len(p0)}",
        "P0 p50 wait ms": waits[len(waits) // 2] if waits else 0.0,
        "P0 p99 wait ms": p99(waits) or 0.0,
        "skipped": sum(1 for f in everything if f["outcome"] == "skipped"),
        "shed": sum(1 for f in everything if f["outcome"] == "shed"),
        "preempted": sum(1 for _, kind, _ in found if kind == "preempted"),
        "_waits": waits,
        "_enqueue_ms": run.enqueue_ms,
    }


# (kind, workload has the P1-P3 jobs, cgroup limit as a multiple of --limit-mib)
KINDS = (("P0 alone", False, 1), ("ample memory", True, 4), ("storm", True, 1))


def cgroup_v1_writable(bench: str) -> bool:
    """Whether this process may make cgroup v1 memory groups (root, a writable controller); says why not."""
    if os.geteuid() == 0 and os.access(V1, os.W_OK):
        return True
    print(f"{bench} needs root and a writable cgroup v1 memory controller", file=sys.stderr)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.storm", description=__doc__.splitlines()[0])
    parser.add_argument("--limit-mib", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of (P0 alone, ample memory, storm)")
    parser.add_argument("--keep-logs", type=Path, help="copy each run's log into this folder")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if not cgroup_v1_writable("bench.storm"):
        return 2
    limit = args.limit_mib * 2**20
    ours_cmd = [[sys.executable, "-m", "adaptive_scheduler", "run"]]
    rq_cmd = [RQ_WORKER] * 2
    env = {
        **os.environ,
        "ASCHED_LOG_LEVEL": "INFO",
        "ASCHED_PRESSURE_HOLD_S": "1",
        "PYTHONPATH": str(ROOT),
        **FIXTURES,
    }
    rows: dict[str, list[dict[str, object]]] = {kind: [] for kind, _, _ in KINDS}
    delays: dict[str, list[tuple[str, float]]] = {"preempt-asked": [], "preempted": []}
    levels = {"HIGH": 85.0, "EMERGENCY": 95.0}
    keep = args.keep_logs
    with tempfile.TemporaryDirectory(prefix="asched-storm-") as tmp_name:
        tmp = Path(tmp_name)
        for round_no in range(1, args.rounds + 1):
            for kind, mixed, times in KINDS:
                name = f"{kind} {round_no}"
                run, client, server = run_system(name, ours_cmd, env, limit * times, mixed, tmp, keep)
                rows[kind].append(summarise(name, run, client))
                server.stop()
                print(f"{name}: P0 p99 {rows[kind][-1]['P0 p99 wait ms']:.1f} ms", flush=True)
                if kind == "storm":
                    last_storm = run
                    for what in delays:
                        delays[what] += action_delays(run, levels, what)
        rq_run, client, server = run_system("rq storm", rq_cmd, env, limit, True, tmp, keep)
        rq_row = summarise("rq worker x2, storm", rq_run, client)
        server.stop()
    RESULTS.mkdir(exist_ok=True)
    plot(last_storm, RESULTS / "storm.png")
    report(rows, rq_row, delays, args.limit_mib)
    return 0


def pooled(rows: list[dict[str, object]]) -> list[float]:
    return sorted(w for row in rows for w in row["_waits"])  # type: ignore[attr-defined]


def report(
    rows: dict[str, list[dict[str, object]]],
    rq_row: dict[str, object],
    delays: dict[str, list[tuple[str, float]]],
    limit_mib: int,
) -> None:
    table = [*(r for kind, _, _ in KINDS for r in rows[kind]), rq_row]
    head = [key for key in table[0] if not key.startswith("_")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table:
        cells = [f"{v:.1f}" if isinstance(v, float) else str(v) for v in (row[key] for key in head)]
        lines.append("| " + " | ".join(cells) + " |")
    waits = {kind: pooled(rows[kind]) for kind, _, _ in KINDS}
    storm_p99 = p99(waits["storm"]) or 0.0
    lines += [
        "",
        "| P0 waits, all rounds | waits | p50 ms | p99 ms | storm p99 / this p99 | five longest ms |",
        "|---|---|---|---|---|---|",
    ]
    for kind, _, times in KINDS:
        pool = waits[kind]
        if not pool:
            continue
        label = f"{kind} ({limit_mib * times} MiB)"
        ratio = storm_p99 / (p99(pool) or 1.0)
        longest = [round(w, 1) for w in pool[-5:]]
        median = pool[len(pool) // 2]
        lines.append(f"| {label} | {len(pool)} | {median:.2f} | {p99(pool):.2f} | {ratio:.2f}x | {longest} |")
    calls = {kind: sorted(ms for r in rows[kind] for ms in r["_enqueue_ms"]) for kind, _, _ in KINDS}  # type: ignore[attr-defined]
    asked, freed = (
        ", ".join(f"{level} {ms:.0f} ms ({ms / 100:.1f} samples)" for level, ms in delays[kind]) or "none"
        for kind in ("preempt-asked", "preempted")
    )
    text = "\n".join(lines) + (
        f"\n\ncgroup v1 limit {limit_mib} MiB (ample memory: {4 * limit_mib} MiB). Threshold crossing "
        f"(outside sample) to the preemption asked (the daemon's action), every storm round: {asked}; to "
        f"the job checkpointed and its slot freed (the job checkpoints every 0.2 s here): {freed}. The "
        "producer's own P0 enqueue calls (part of each wait), p50 / longest ms: "
        + "; ".join(f"{kind}: {c[len(c) // 2]:.1f} / {c[-1]:.1f}" for kind, c in calls.items() if c)
        + "."
    )
    print(text)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    (RESULTS / "storm.md").write_text(f"# Memory storm, {stamp}\n\n{text}\n\n![timeline](storm.png)\n")


if __name__ == "__main__":
    sys.exit(main())
