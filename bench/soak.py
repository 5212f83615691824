"""Soak: one daemon under sustained mixed load with memory pressure spikes, watched for leaks.

Load (plain RQ producers, JSON): P0 `add` twice a second; P1 `sleep` every second and a checkpointing
`long_sum` every 3 s; P2 `allocate_steps` (30 MiB, preemptible) every second and an `allocate` (20 MiB)
with a deadline every 2 s; P3 a heartbeat twice a second and a `noop` every 2 s; plus a periodic
heartbeat the daemon enqueues itself every 2 s. With a 300 MB budget (286 MiB), a spike every
`--spike-every` s alternates a P0 job holding 230 MiB (EMERGENCY) and a P1 job holding 200 MiB (HIGH).

Measured: the daemon's RSS after the warm-up against the end of the load (goal: growth < 10 %), its
open descriptors, threads and child processes over time (no leak: flat), then, once the queues have
drained, every job accounted for (finished + failed + shed + skipped + still waiting = enqueued) and
every Redis key without a TTL, grouped by pattern, apart from what is expected to have none (RQ's
queues and registries, job hashes still waiting, shed jobs kept for replay by design).

    python -m bench.soak --minutes 10            (prints a table, writes bench/results/soak.md, .json)

`tests/integration/test_soak.py` runs the same code for about 20 s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis
from adaptive_scheduler.redis_server import RedisServer
from rq import Queue
from rq.serializers import JSONSerializer

from tests.helpers import FIXTURES

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
MIB = 2**20
LEVELS = ("NORMAL", "ELEVATED", "HIGH", "EMERGENCY")
NUMBER = re.compile(r"\b\d+(\.\d+)?\b")  # failure reasons group once their numbers are dropped

# Redis keys expected to have no TTL: RQ's queues and registries (RQ trims registries itself), the
# list of queues, RQ's worker sets (a member per live worker: a daemon's own is removed at its stop, a
# dead one's pruned at the next daemon's start), our shed registry (shed jobs are kept for replay), our
# set of daemon ids (pruned when a dead daemon's jobs are recovered), our skipped registry (trimmed to
# the result TTL), the memory profiles (one entry per task, at most profile_max_tasks), the foreign
# list (bounded), the paused priorities (at most four fields) and the daemons' levels for producers (a
# field per live daemon: removed at its stop, a dead one's pruned at the next daemon's start).
EXPECTED_WITHOUT_TTL = re.compile(
    r"^rq:queues$|^rq:(queue|wip|finished|failed|scheduled|canceled|deferred):[^:]+$|^rq:workers(:[^:]+)?$"
    r"|^asched:(shed|daemons|skipped|profiles|foreign|paused|levels)$"
)
WAITING = {"queued", "scheduled", "deferred"}
UNENDED = WAITING | {"started"}  # an RQ job hash has no TTL until the job ends
PATTERNS = [
    (re.compile(r"^rq:job:[^:]+$"), "rq:job:<id>"),
    (re.compile(r"^rq:job:[^:]+:(.+)$"), r"rq:job:<id>:\1"),
    (re.compile(r"^rq:results:.+$"), "rq:results:<id>"),
    (re.compile(r"^rq:(queue|wip|finished|failed|scheduled|canceled|deferred):.+$"), r"rq:\1:<queue>"),
    (re.compile(r"^asched:(daemon|status):.+$"), r"asched:\1:<daemon id>"),
    (re.compile(r"^asched:periodic:([^:]+):\d+$"), r"asched:periodic:\1:<tick>"),
]


@dataclass
class Config:
    minutes: float
    budget: str = "300MB"
    sample_every_s: float = 5.0
    warmup_s: float | None = None  # default: a fifth of the run, at most 60 s
    spike_every_s: float = 20.0
    drain_timeout_s: float = 120.0
    seed: int = 1

    @property
    def duration_s(self) -> float:
        return self.minutes * 60

    @property
    def warmup(self) -> float:
        return self.warmup_s if self.warmup_s is not None else min(60.0, self.duration_s / 5)


@dataclass
class Sample:
    t: float
    rss_mib: float
    fds: int
    threads: int
    children: int
    zombies: int
    level: str
    pressure: float
    redis_keys: int
    redis_mib: float
    child_titles: list[str] = field(default_factory=list)  # the live children, to tell which one leaked


@dataclass
class Load:
    """What the producer enqueued: job id -> (priority, task)."""

    jobs: dict[str, tuple[int, str]] = field(default_factory=dict)
    spikes: int = 0


# --- load ----------------------------------------------------------------------------------------

# (every s, priority, task, args, options)
STEADY: list[tuple[float, int, str, tuple[Any, ...], dict[str, Any]]] = [
    (0.5, 0, "tests.fixtures.jobs.add", (1, 1), {}),
    (1.0, 1, "tests.fixtures.jobs.sleep", (0.05,), {}),
    (3.0, 1, "tests.fixtures.jobs.long_sum", (400_000, 20_000, 0.02), {}),
    (1.0, 2, "tests.fixtures.jobs.allocate_steps", (30, 5, 0.05), {}),
    (2.0, 2, "tests.fixtures.jobs.allocate", (20, 0.2), {"deadline_in_s": 5}),
    (0.5, 3, "tests.fixtures.jobs.heartbeat", (), {}),
    (2.0, 3, "tests.fixtures.jobs.noop", (), {}),
]
SPIKES = [
    (0, "tests.fixtures.jobs.allocate", (230, 2.0)),  # P0 holding 230 MiB: past 95 %, EMERGENCY
    (1, "tests.fixtures.jobs.allocate", (200, 2.0)),  # P1 holding 200 MiB: past 85 %, HIGH
]


def result_ttl_s(config: Config) -> int:
    """Results (and skipped jobs) outlive the run, so every job's end state is readable at the end."""
    return int(config.duration_s + config.drain_timeout_s + 3600)


class Producer:
    """Enqueues the steady load on its schedule and a spike every `spike_every_s`."""

    def __init__(self, client: redis.Redis, config: Config, load: Load) -> None:
        self.queues = [Queue(f"p{p}", connection=client, serializer=JSONSerializer) for p in range(4)]
        self.config = config
        self.load = load
        self.rng = random.Random(config.seed)
        self.result_ttl = result_ttl_s(config)
        self.next_due = [0.0] * len(STEADY)
        self.next_spike = config.spike_every_s / 2

    def step(self, elapsed: float) -> None:
        for i, (every, priority, task, args, options) in enumerate(STEADY):
            if elapsed >= self.next_due[i]:
                self.next_due[i] = elapsed + every * self.rng.uniform(0.7, 1.3)
                meta = {"deadline": time.time() + options["deadline_in_s"]} if options else None
                self._enqueue(priority, task, args, meta)
        if elapsed >= self.next_spike:
            self.next_spike = elapsed + self.config.spike_every_s
            priority, task, args = SPIKES[self.load.spikes % len(SPIKES)]
            self._enqueue(priority, task, args, None)
            self.load.spikes += 1

    def _enqueue(self, priority: int, task: str, args: tuple[Any, ...], meta: dict[str, Any] | None) -> None:
        job = self.queues[priority].enqueue(
            task, *args, result_ttl=self.result_ttl, meta=meta, job_timeout=60
        )
        self.load.jobs[job.id] = (priority, task.rsplit(".", 1)[1])


# --- measurement ---------------------------------------------------------------------------------


def sample(daemon: psutil.Process, client: redis.Redis, t: float) -> Sample:
    children = daemon.children()
    zombies = sum(1 for c in children if _status(c) == psutil.STATUS_ZOMBIE)
    level, pressure = "?", 0.0
    for key in client.scan_iter(match="asched:status:*"):
        memory = json.loads(client.get(key) or "{}").get("memory") or {}
        level, pressure = memory.get("level", "?"), float(memory.get("pressure_percent", 0.0))
    return Sample(
        round(t, 1),
        round(daemon.memory_info().rss / MIB, 2),
        daemon.num_fds(),
        daemon.num_threads(),
        len(children) - zombies,
        zombies,
        level,
        pressure,
        int(client.dbsize()),
        round(client.info("memory")["used_memory"] / MIB, 1),
        sorted(_title(c) for c in children if _status(c) not in (psutil.STATUS_ZOMBIE, "gone")),
    )


def _title(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline()).strip()
    except psutil.Error:
        return "gone"


def _status(proc: psutil.Process) -> str:
    try:
        return str(proc.status())
    except psutil.Error:
        return "gone"


def account(client: redis.Redis, load: Load) -> dict[str, Any]:
    """The end state of every enqueued job, from its job hash: counts, and counts per priority."""
    counts: Counter[str] = Counter()
    by_priority: dict[str, Counter[str]] = {f"P{p}": Counter() for p in range(4)}
    with client.pipeline(transaction=False) as pipe:
        for job_id in load.jobs:
            pipe.hmget(f"rq:job:{job_id}", "status", "asched_outcome")
        rows = pipe.execute()
    for (priority, _), (status, outcome) in zip(load.jobs.values(), rows, strict=True):
        if status is None:
            state = "missing"
        elif status == b"canceled" and outcome in (b"shed", b"skipped"):
            state = outcome.decode()
        else:
            state = status.decode()
        counts[state] += 1
        by_priority[f"P{priority}"][state] += 1
    return {
        **counts,
        "enqueued": len(load.jobs),
        "by_priority": {p: dict(c) for p, c in by_priority.items()},
        "failed_because": failure_reasons(client, load),
    }


def failure_reasons(client: redis.Redis, load: Load) -> dict[str, int]:
    """Failed jobs by task and the last line of their reason (numbers dropped, so they group)."""
    reasons: Counter[str] = Counter()
    for job_id, (_, task) in load.jobs.items():
        status, exc_info = client.hmget(f"rq:job:{job_id}", "status", "exc_info")
        if status != b"failed" or not exc_info:
            continue
        try:
            text = zlib.decompress(exc_info).decode("utf-8", "replace")
        except zlib.error:
            text = exc_info.decode("utf-8", "replace")
        last = text.strip().splitlines()[-1] if text.strip() else "?"
        reasons[f"{task}: {NUMBER.sub('N', last)[:120]}"] += 1
    return dict(reasons.most_common())


def keys_without_ttl(client: redis.Redis) -> dict[str, Any]:
    """Keys with no TTL, grouped by pattern: expected (RQ registries, waiting or shed jobs) or not."""
    expected: Counter[str] = Counter()
    unexpected: Counter[str] = Counter()
    examples: dict[str, str] = {}
    total = 0
    for raw in client.scan_iter(count=1000):
        total += 1
        key = raw.decode()
        if client.ttl(key) != -1:
            continue
        pattern = group(key)
        if EXPECTED_WITHOUT_TTL.match(key):
            expected[pattern] += 1
        elif pattern == "rq:job:<id>" and (state := _waiting_or_shed(client, key)):
            expected[f"{pattern} ({state})"] += 1
        else:
            note = _describe(client, key)
            unexpected[f"{pattern}{note}"] += 1
            examples.setdefault(f"{pattern}{note}", key)
    return {"keys": total, "expected": dict(expected), "unexpected": dict(unexpected), "examples": examples}


def group(key: str) -> str:
    for pattern, replacement in PATTERNS:
        if pattern.match(key):
            return pattern.sub(replacement, key)
    return key


def _waiting_or_shed(client: redis.Redis, key: str) -> str:
    """Why a job hash may have no TTL: it still waits (RQ sets none until the job ends), or it was shed
    (kept for replay, by design); "" otherwise."""
    status, outcome = client.hmget(key, "status", "asched_outcome")
    if outcome == b"shed":
        return "shed: kept for replay"
    state = (status or b"").decode()
    return f"{state}: not ended yet" if state in UNENDED else ""


def _describe(client: redis.Redis, key: str) -> str:
    if key.startswith("rq:job:") and client.type(key) == b"hash":
        status, outcome = client.hmget(key, "status", "asched_outcome")
        what = (outcome or status or b"?").decode()
        return f" ({what})"
    return ""


def log_counts(text: str) -> dict[str, int]:
    lines = text.splitlines()
    changes = [m for line in lines if (m := re.search(r"memory pressure \w+ -> (\w+) at ([\d.]+) %", line))]
    levels = Counter(m.group(1) for m in changes)
    return {
        "peak pressure": max((float(m.group(2)) for m in changes), default=0.0),
        **{f"to {level}": levels.get(level, 0) for level in LEVELS},
        "errors": sum(1 for line in lines if "| ERROR" in line or "| CRITICAL" in line),
        "tracebacks": text.count("Traceback"),
        "slots replaced": text.count("replaced:"),
        "slots recycled": text.count("recycled:"),
    }


# --- the run -------------------------------------------------------------------------------------


def run(config: Config, redis_url: str | None = None, workdir: Path | None = None) -> dict[str, Any]:
    """Run the soak and return its report (a JSON-able dict)."""
    with tempfile.TemporaryDirectory(prefix="asched-soak-") as tmp:
        work = workdir or Path(tmp)
        server = None
        if redis_url is None:
            server = RedisServer(Path(tmp) / "redis", persistent=False).start()
            redis_url = server.url
        try:
            return _run(config, redis_url, work)
        finally:
            if server is not None:
                server.stop()


def _run(config: Config, redis_url: str, work: Path) -> dict[str, Any]:
    client = redis.Redis.from_url(redis_url)
    log_path = work / "daemon.log"
    env = {
        **os.environ,
        "ASCHED_REDIS_URL": redis_url,
        "ASCHED_MEMORY_BUDGET": config.budget,
        "ASCHED_PRESSURE_HOLD_S": "1",
        "ASCHED_PREEMPT_GRACE_S": "1",
        "ASCHED_LOG_LEVEL": "INFO",
        **FIXTURES,
        "ASCHED_DEFAULT_RESULT_TTL_S": str(result_ttl_s(config)),  # skipped jobs: readable at the end
        "ASCHED_BREAKER_COOLDOWN_S": "5",  # allocate fails under EMERGENCY; its breaker opens, briefly
        "ASCHED_PERIODIC": json.dumps([{"name": "beat", "task": "heartbeat", "every_s": 2}]),
    }
    load = Load()
    samples: list[Sample] = []
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "adaptive_scheduler", "run"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait(lambda: any(True for _ in client.scan_iter(match="asched:status:*")), 20, process)
        daemon = psutil.Process(process.pid)
        producer = Producer(client, config, load)
        started = time.monotonic()
        next_sample = 0.0
        while (elapsed := time.monotonic() - started) < config.duration_s:
            producer.step(elapsed)
            if elapsed >= next_sample:
                samples.append(sample(daemon, client, elapsed))
                next_sample += config.sample_every_s
            _check_alive(process)
            time.sleep(0.05)
        samples.append(sample(daemon, client, time.monotonic() - started))
        drained = _drain(client, config.drain_timeout_s, process)
        samples.append(sample(daemon, client, time.monotonic() - started))
        keys = keys_without_ttl(client)
        counts = _daemon_counts(client)
        process.send_signal(signal.SIGTERM)
        exit_code = process.wait(timeout=60)
        keys_after_stop = keys_without_ttl(client)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    report = {
        "config": asdict(config) | {"duration_s": config.duration_s, "warmup_s": config.warmup},
        "samples": [asdict(s) for s in samples],
        "jobs": account(client, load),
        "spikes": load.spikes,
        "drained_s": drained,
        "daemon_counts": counts,
        "log": log_counts(log_path.read_text(errors="replace")),
        "keys_running": keys,
        "keys_after_stop": keys_after_stop,
        "exit_code": exit_code,
    }
    report["summary"] = summarize(report, config)
    client.close()
    return report


def _wait(predicate: Any, timeout_s: float, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        _check_alive(process)
        if time.monotonic() > deadline:
            raise RuntimeError(f"not ready within {timeout_s} s")
        time.sleep(0.05)


def _check_alive(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        raise RuntimeError(f"the daemon exited with code {process.returncode}")


def _drain(client: redis.Redis, timeout_s: float, process: subprocess.Popen[bytes]) -> float:
    """Wait until nothing waits or runs (queues, started and scheduled registries empty); seconds."""
    started = time.monotonic()

    def idle() -> bool:
        with client.pipeline(transaction=False) as pipe:
            for p in range(4):
                pipe.llen(f"rq:queue:p{p}")
                pipe.zcard(f"rq:wip:p{p}")
                pipe.zcard(f"rq:scheduled:p{p}")
            return sum(pipe.execute()) == 0

    try:
        _wait(idle, timeout_s, process)
    except RuntimeError:
        return -1.0  # reported: the accounting then shows what still waits
    return round(time.monotonic() - started, 1)


def _daemon_counts(client: redis.Redis) -> dict[str, int]:
    for key in client.scan_iter(match="asched:status:*"):
        return dict(json.loads(client.get(key) or "{}").get("counts", {}))
    return {}


def summarize(report: dict[str, Any], config: Config) -> dict[str, Any]:
    samples = [Sample(**s) for s in report["samples"]]
    load_end = samples[-2]  # the last sample of the load (the last one is after the drain)
    warm = next((s for s in samples if s.t >= config.warmup), samples[0])
    after_warm = [s for s in samples if s.t >= warm.t]
    jobs = report["jobs"]
    ended = sum(jobs.get(k, 0) for k in ("finished", "failed", "shed", "skipped"))
    waiting = sum(jobs.get(k, 0) for k in WAITING)
    levels = Counter(s.level for s in samples)
    return {
        "rss_warm_mib": warm.rss_mib,
        "rss_end_mib": load_end.rss_mib,
        "rss_max_mib": max(s.rss_mib for s in after_warm),
        "rss_growth_percent": round(100 * (load_end.rss_mib - warm.rss_mib) / warm.rss_mib, 2),
        "fds": _range(after_warm, "fds", warm, load_end),
        "threads": _range(after_warm, "threads", warm, load_end),
        "children": _range(after_warm, "children", warm, load_end),
        "children_at_most": max(after_warm, key=lambda s: s.children).child_titles,
        "zombies_max": max(s.zombies for s in samples),
        "ended": ended,
        "waiting": waiting,
        "lost": jobs["enqueued"] - ended - waiting,
        "levels_sampled": {level: levels.get(level, 0) for level in LEVELS},
        "peak_pressure": max(s.pressure for s in samples),
        "unexpected_keys_without_ttl": sum(report["keys_running"]["unexpected"].values()),
    }


def _range(samples: list[Sample], name: str, warm: Sample, end: Sample) -> dict[str, int]:
    values = [getattr(s, name) for s in samples]
    return {"warm": getattr(warm, name), "end": getattr(end, name), "min": min(values), "max": max(values)}


# --- output --------------------------------------------------------------------------------------


def table(report: dict[str, Any]) -> str:
    s, jobs, log, counts = report["summary"], report["jobs"], report["log"], report["daemon_counts"]
    config = report["config"]
    rows = [
        ("duration / warm-up / samples", f"{config['duration_s']:.0f} s / {config['warmup_s']:.0f} s / "
         f"every {config['sample_every_s']:g} s"),
        ("daemon RSS after warm-up -> end of load (max)",
         f"{s['rss_warm_mib']:.1f} -> {s['rss_end_mib']:.1f} MiB ({s['rss_max_mib']:.1f}): "
         f"{s['rss_growth_percent']:+.1f} %"),
        ("open fds warm -> end (min-max)", _span(s["fds"])),
        ("threads warm -> end (min-max)", _span(s["threads"])),
        ("child processes warm -> end (min-max)", _span(s["children"])),
        ("zombie children (max seen)", s["zombies_max"]),
        ("pressure spikes enqueued / peak pressure % (at a level change)",
         f"{report['spikes']} / {log['peak pressure']:.1f}"),
        ("level changes to ELEVATED / HIGH / EMERGENCY / NORMAL",
         f"{log['to ELEVATED']} / {log['to HIGH']} / {log['to EMERGENCY']} / {log['to NORMAL']}"),
        ("samples at NORMAL / ELEVATED / HIGH / EMERGENCY",
         " / ".join(str(v) for v in s["levels_sampled"].values())),
        ("jobs enqueued", jobs["enqueued"]),
        ("  finished / failed / shed / skipped", f"{jobs.get('finished', 0)} / {jobs.get('failed', 0)} / "
         f"{jobs.get('shed', 0)} / {jobs.get('skipped', 0)}"),
        ("  still waiting (queued, scheduled) / lost", f"{s['waiting']} / {s['lost']}"),
        *[(f"  {p}", _states(c)) for p, c in jobs["by_priority"].items()],
        ("daemon counts: preempted / resumed / put back / retried", f"{counts.get('preempted', 0)} / "
         f"{counts.get('resumed', 0)} / {counts.get('put_back', 0)} / {counts.get('retried', 0)}"),
        ("drain after the load (s)", report["drained_s"]),
        ("slots replaced / recycled; errors, tracebacks in the log", f"{log['slots replaced']} / "
         f"{log['slots recycled']}; {log['errors']}, {log['tracebacks']}"),
        ("Redis keys at the end / without TTL, unexpected", f"{report['keys_running']['keys']} / "
         f"{s['unexpected_keys_without_ttl']}"),
        ("daemon exit code on SIGTERM", report["exit_code"]),
    ]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    lines.append("")
    lines.append("failed jobs, by task and reason:")
    lines.extend(f"  {n:>6}  {reason}" for reason, n in jobs["failed_because"].items())
    lines.append("")
    lines.append("keys without TTL, by pattern (while running, after the drain):")
    for title, groups in (("expected", "expected"), ("UNEXPECTED", "unexpected")):
        for pattern, n in sorted(report["keys_running"][groups].items()):
            example = report["keys_running"]["examples"].get(pattern, "")
            lines.append(f"  {title:<10} {n:>6}  {pattern}" + (f"   e.g. {example}" if example else ""))
    return "\n".join(lines)


def _states(counts: dict[str, int]) -> str:
    return ", ".join(f"{state} {n}" for state, n in sorted(counts.items()))


def _span(r: dict[str, int]) -> str:
    return f"{r['warm']} -> {r['end']} ({r['min']}-{r['max']})"


def series(report: dict[str, Any], rows: int = 25) -> str:
    samples = report["samples"]
    step = max(1, len(samples) // rows)
    lines = [
        "| t s | RSS MiB | fds | threads | children | level | pressure % | Redis keys | Redis MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in [*samples[::step], samples[-1]]:
        lines.append(
            f"| {s['t']:.0f} | {s['rss_mib']:.1f} | {s['fds']} | {s['threads']} | {s['children']} "
            f"| {s['level']} | {s['pressure']:.1f} | {s['redis_keys']} | {s['redis_mib']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--budget", default="300MB")
    parser.add_argument("--sample-every", type=float, default=5.0)
    parser.add_argument("--spike-every", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    config = Config(args.minutes, args.budget, args.sample_every, None, args.spike_every, seed=args.seed)
    report = run(config)
    text = table(report)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    command = f"python -m bench.soak --minutes {args.minutes:g}"
    (args.out / "soak.md").write_text(
        f"# Soak, {stamp}\n\n`{command}`\n\n```\n{text}\n```\n\n## Over time\n\n{series(report)}\n"
    )
    (args.out / "soak.json").write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
