"""Memory storm with plain RQ jobs: our daemon against `rq worker` x2 when jobs that know nothing of
the daemon (no SDK, no checkpoints) ask for more memory than the cgroup has.

Why: bench.storm measures jobs written for the daemon. Most jobs of an application moving from RQ are
plain functions, and for them the daemon's only tools are ordering, admission and stopping; this
benchmark tells whether those beat plain `rq worker`, which lets the kernel's OOM killer decide.

Each (system, scenario) runs in a fresh cgroup v1 memory group of 700 MB (both systems with 2
slots/processes; Redis outside the group); the plain jobs are enqueued with plain RQ (JSON) at once,
then eight P0 `marker()` jobs, one a second (and, first, those markers alone: the calm P0 waits):
- plain storm: ten `touch(330, 3.0)` on p2/p3 (5 each): one fits, two at once do not;
- packing storm: four `touch(330, 2.0)` among thirty `touch(40, 0.3)`, interleaved on p2/p3 with the
  big ones in adjacent pairs: a big job and a few small ones fit together, two big ones do not.
The jobs (bench/plain_jobs.py) log their executions to a file, so that starts, stops and wasted work
are measured the same way for both systems; bench/memstorm_report.py turns that into the tables.
Rounds interleave the systems (the order alternates), since machine speed drifts between runs.

    python -m bench.memstorm [--rounds 1] [--timeout-s 240] [--keep-logs DIR]
    (root, with a writable cgroup v1 memory controller; matplotlib for the chart)
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import redis
from adaptive_scheduler.redis_server import RedisServer
from adaptive_scheduler.rqtime import unix_seconds
from rq import Queue
from rq.serializers import JSONSerializer

from bench.memstorm_report import JobFacts, Scenario, Spec, Trial, write_results
from bench.plain_jobs import RUN_LOG_ENV
from bench.storm import RQ_WORKER, TERMINAL, Cgroup, all_ended, cgroup_v1_writable, sample, stop_processes
from tests.helpers import live_daemons

ROOT = Path(__file__).resolve().parent.parent
LIMIT_BYTES = 700 * 10**6
PLAIN_JOBS = "bench.plain_jobs"
MARKER = f"{PLAIN_JOBS}.marker"
MARKERS_AT_S = tuple(float(s) for s in range(8))  # a P0 marker every second for 8 s
READY_TIMEOUT_S = 30.0
FACT_FIELDS = ("status", "enqueued_at", "started_at", "ended_at")
BIG_AT = frozenset({0, 2, 17, 19})


def calm() -> Scenario:
    """The P0 markers alone, in the same cgroup: the P0 waits the storms are compared with."""
    return Scenario("calm: P0 markers alone", ())


def plain_storm() -> Scenario:
    return Scenario("plain storm", tuple(Spec(f"p{2 + i % 2}", 330, 3.0) for i in range(10)))


def packing_storm(one_function: bool = False) -> Scenario:
    """Big jobs at positions 0, 2, 17 and 19 of 34: next to each other at p2's head and in p3's middle,
    so that a consumer taking jobs in queue order starts two big ones together twice. (Two big ones
    started 0.3 s apart do fit: the first frees its memory while the second still grows.)

    The small jobs are a function of their own (`small`), as an application would usually write them;
    `one_function` makes them `touch` too: the daemon learns memory per function, so it then predicts
    every run of `touch` at the p90 of big and small runs alike, and cannot pack them."""
    big, small = (330, 2.0, "touch"), (40, 0.3, "touch" if one_function else "small")
    return Scenario(
        "packing storm, one function" if one_function else "packing storm",
        tuple(Spec(f"p{2 + i % 2}", *(big if i in BIG_AT else small)) for i in range(34)),
    )


@dataclass(frozen=True, slots=True)
class System:
    """A consumer under test: its processes (all launched into the cgroup) and when it serves."""

    name: str
    commands: tuple[tuple[str, ...], ...]
    env: dict[str, str]
    ready: Callable[[redis.Redis], bool]


def systems() -> tuple[System, System]:
    """Ours with the brief's settings (budget: the cgroup limit, read by the daemon) and `rq worker` x2.

    Children get PYTHONPATH=<this tree> only, so that an editable install elsewhere is not imported."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("ASCHED_")} | {"PYTHONPATH": str(ROOT)}
    ours = base | {
        "ASCHED_SLOTS": "2",
        "ASCHED_PRESSURE_HOLD_S": "1",
        "ASCHED_LOG_LEVEL": "INFO",
        "ASCHED_ALLOWED_MODULES": '["bench.plain_jobs"]',
    }
    return (
        System(
            "ours",
            ((sys.executable, "-m", "adaptive_scheduler", "run"),),
            ours,
            lambda c: live_daemons(c) >= 1,
        ),
        System("rq worker x2", (tuple(RQ_WORKER),) * 2, base, lambda c: c.scard("rq:workers") >= 2),
    )


@dataclass(frozen=True, slots=True)
class Options:
    tmp: Path
    timeout_s: float
    keep_logs: Path | None


@dataclass
class Consumers:
    """The system's processes inside their cgroup, with the usage sampler; `close` undoes it all."""

    cgroup: Cgroup
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def close(self) -> int:
        """Stop the sampler and the processes, remove the cgroup; returns its OOM kill count."""
        self.stop.set()
        try:
            stop_processes(self.processes)
            return self.cgroup.oom_kills()
        finally:
            self.cgroup.remove()


def run_trial(system: System, scenario: Scenario, round_no: int, options: Options) -> Trial:
    """One system through one scenario, from a fresh Redis and cgroup to the job facts."""
    slug = f"{scenario.name}-{system.name}-{round_no}".replace(" ", "-")
    trial = Trial(system.name, scenario, round_no)
    server = RedisServer(options.tmp / f"redis-{slug}", persistent=False).start()
    run_log = options.tmp / f"{slug}.runs"
    log = options.tmp / f"{slug}.log"
    try:
        client = redis.Redis.from_url(server.url)
        env = system.env | {"ASCHED_REDIS_URL": server.url, RUN_LOG_ENV: str(run_log)}
        consumers = Consumers(Cgroup(LIMIT_BYTES))
        try:
            for command in system.commands:
                argv = [part.replace("{URL}", server.url) for part in command]
                consumers.processes.append(consumers.cgroup.launch(argv, env, log))
            wait_ready(system, client, consumers, log)
            sampler = threading.Thread(
                target=sample, args=(consumers.cgroup, trial.samples, consumers.stop), daemon=True
            )
            sampler.start()
            drive(client, trial, options.timeout_s)
        finally:
            trial.oom_kills = consumers.close()
        trial.jobs = job_facts(client, [*trial.plain_ids, *trial.marker_ids])
        trial.run_log = run_log.read_text() if run_log.exists() else ""
    finally:
        server.stop()
        keep(options.keep_logs, log, run_log)
    return trial


def wait_ready(system: System, client: redis.Redis, consumers: Consumers, log: Path) -> None:
    """Wait until the system serves, so that the clock starts with the first enqueue, not the imports."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not system.ready(client):
        if time.monotonic() > deadline or any(p.poll() is not None for p in consumers.processes):
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise RuntimeError(f"{system.name} did not come up within {READY_TIMEOUT_S} s:\n{tail}")
        time.sleep(0.05)


def drive(client: redis.Redis, trial: Trial, timeout_s: float) -> None:
    """Enqueue the plain jobs at once and the P0 markers on their schedule, then wait until every job
    has ended (finished, failed or canceled) or `timeout_s` has passed since the first enqueue."""
    queues = {f"p{p}": Queue(f"p{p}", connection=client, serializer=JSONSerializer) for p in range(4)}
    trial.t0 = time.time()
    for spec in trial.scenario.jobs:
        job_id = f"touch-{uuid.uuid4().hex[:12]}"  # also the tag: get_current_job() may not work
        func = f"{PLAIN_JOBS}.{spec.func}"
        queues[spec.queue].enqueue_call(func, (spec.mib, spec.seconds), {"tag": job_id}, job_id=job_id)
        trial.plain_ids.append(job_id)
    pending = list(MARKERS_AT_S)
    while (now := time.time()) < trial.t0 + timeout_s:
        while pending and pending[0] <= now - trial.t0:
            pending.pop(0)
            trial.marker_ids.append(queues["p0"].enqueue(MARKER).id)
        if not pending and all_ended(client, {"all": [*trial.plain_ids, *trial.marker_ids]}):
            trial.settled_at = time.time()
            return
        time.sleep(0.1)


def job_facts(client: redis.Redis, job_ids: list[str]) -> dict[str, JobFacts]:
    with client.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hmget(f"rq:job:{job_id}", FACT_FIELDS)
        rows = pipe.execute()
    facts = {}
    for job_id, (status, enqueued, started, ended) in zip(job_ids, rows, strict=True):
        text = (status or b"").decode()
        facts[job_id] = JobFacts(
            text, text in TERMINAL, unix_seconds(enqueued), unix_seconds(started), unix_seconds(ended)
        )
    return facts


def keep(folder: Path | None, *paths: Path) -> None:
    if folder is None:
        return
    folder.mkdir(parents=True, exist_ok=True)
    for path in paths:
        if path.exists():
            shutil.copy(path, folder / path.name)


def run_rounds(rounds: int, options: Options) -> list[Trial]:
    """Every scenario for both systems, round after round; which system goes first alternates."""
    trials = []
    for round_no in range(1, rounds + 1):
        for scenario in (calm(), plain_storm(), packing_storm(), packing_storm(one_function=True)):
            pair = systems() if round_no % 2 else systems()[::-1]
            for system in pair:
                trial = run_trial(system, scenario, round_no, options)
                trials.append(trial)
                print(f"{scenario.name}, {system.name}, round {round_no}: {trial.brief()}", flush=True)
    return trials


def _exit_on_sigterm(signum: int, frame: object) -> NoReturn:
    raise SystemExit(128 + signum)  # unwinds through the `finally`s: cgroups and processes are cleaned


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memstorm", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1, help="rounds of both scenarios for both systems")
    parser.add_argument("--timeout-s", type=float, default=240.0, help="a run's limit from its first enqueue")
    parser.add_argument("--keep-logs", type=Path, help="copy daemon/worker logs and run logs here")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if not cgroup_v1_writable("bench.memstorm"):
        return 2
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    command = " ".join(["python -m bench.memstorm", *(sys.argv[1:] if argv is None else argv)])
    with tempfile.TemporaryDirectory(prefix="asched-memstorm-") as tmp:
        trials = run_rounds(args.rounds, Options(Path(tmp), args.timeout_s, args.keep_logs))
    print(write_results(trials, command, LIMIT_BYTES, args.timeout_s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
