"""Chaos run (issue 15): three daemons on a Sentinel cluster under a steady producer, with crashes,
freezes, Redis restarts and failovers at random moments; every execution recorded outside the job Redis.

Real processes on loopback: a master with AOF, one replica, three sentinels (`down-after-milliseconds`
1000), three daemons (2 slots, `lease_ttl_s` 2) on the `redis+sentinel://` URL, a producer of
uniquely identified plain RQ jobs (bench.chaos_producer), and a separate plain redis-server where each
execution records itself (tests.fixtures.jobs.record_execution). Faults come one after another, a few
seconds apart (seeded): SIGKILL of a daemon (restarted 2-5 s later), SIGSTOP of a daemon beyond its
lease, SIGKILL of a slot running a job, a SIGKILL and restart of the master from its AOF (sentinels may
fail over meanwhile), and a failover (the master killed, brought back as a replica once the sentinels
promoted the other). The last stretch has no faults; after the producer stops, everything drains.
The report (bench/results/chaos.md, chaos.json) is written by bench.chaos_report.

    python -m bench.chaos [--minutes 5] [--seed 1] [--rate 10]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis
from adaptive_scheduler.redis_server import RedisServer
from adaptive_scheduler.rqtime import unix_seconds
from redis.sentinel import Sentinel

from bench import chaos_report
from tests.helpers import ROOT, DaemonProcess, children
from tests.sentinel_cluster import SERVICE, SentinelCluster

RESULTS = Path(__file__).resolve().parent / "results"
LEASE_S = 2.0
DOWN_AFTER_MS = 1000
DAEMON_ENV = {"ASCHED_LEASE_TTL_S": f"{LEASE_S:g}", "ASCHED_SLOTS": "2", "ASCHED_LOG_LEVEL": "INFO"}
MASTER_FAULT_SPACING_S = 12.0  # a sentinel starts no new failover of one master within 2 x failover-timeout
KINDS = ("daemon_kill", "daemon_stop", "slot_kill", "master_restart", "failover")


@dataclass
class Fault:
    """One fault the run caused: what, when (unix s), and whom (a pid, or a data server's name)."""

    kind: str
    at: float
    pid: int | None = None
    server: str | None = None
    ended: float = 0.0
    detail: dict[str, float | str | None] = field(default_factory=dict)


@dataclass
class Seat:
    """One of the three daemons: its current process and every process it had."""

    number: int
    current: DaemonProcess
    past: list[DaemonProcess] = field(default_factory=list)
    killed: set[int] = field(default_factory=set)  # pids this run SIGKILLed on purpose


class Chaos:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args, self.workdir = args, workdir
        self.rng = random.Random(args.seed)
        self.cluster = SentinelCluster(appendonly=True, down_after_ms=DOWN_AFTER_MS)
        self.recorder = RedisServer(workdir / "recorder", persistent=False)
        self.seats: list[Seat] = []
        self.faults: list[Fault] = []
        self.unexpected_exits: list[dict[str, object]] = []
        self.probes: list[threading.Thread] = []
        self.producer: subprocess.Popen[bytes] | None = None
        self.produced = workdir / "produced.txt"
        self.last_master_fault = 0.0
        self.t0 = time.time()

    # --- set-up and tear-down ---------------------------------------------------------------------

    def start(self) -> None:
        self.cluster.start()
        self.recorder.start()
        self.seats = [Seat(n, self._daemon()) for n in range(3)]
        for seat in self.seats:
            seat.current.wait_ready(count=3, timeout_s=30)
        command = [sys.executable, "-m", "bench.chaos_producer", self.cluster.url, self.recorder.url]
        command += [str(self.produced), "--rate", str(self.args.rate), "--seed", str(self.args.seed)]
        self.producer = subprocess.Popen(command, cwd=ROOT, start_new_session=True)

    def _daemon(self) -> DaemonProcess:
        return DaemonProcess(self.cluster.url, env=DAEMON_ENV)

    def stop(self) -> dict[str, int | None]:
        """SIGTERM every daemon; their exit codes (0 is a clean stop)."""
        codes = {}
        for seat in self.seats:
            self._check_exit(seat)
            codes[f"daemon {seat.number} (pid {seat.current.process.pid})"] = _stop(seat.current)
        for seat in self.seats:
            for number, daemon in enumerate([*seat.past, seat.current]):
                shutil.copy(daemon.log.name, self.workdir / f"daemon{seat.number}-{number}.log")
        return codes

    def close(self) -> None:
        for seat in self.seats:
            for daemon in [*seat.past, seat.current]:
                daemon.client.close()
                daemon.log.close()
        self.cluster.stop()
        self.recorder.stop()

    # --- the run ----------------------------------------------------------------------------------

    def run(self) -> None:
        started = self.t0 = time.time()
        faults_until = started + self.args.minutes * 60 - self.args.quiet_s
        while True:
            self._idle(self.rng.uniform(2.0, 8.0))
            if time.time() >= faults_until:
                break
            self._fault(self._pick_kind())
        self._idle(max(0.0, started + self.args.minutes * 60 - time.time()))
        assert self.producer is not None
        self.producer.send_signal(signal.SIGTERM)
        self.producer.wait(timeout=30)
        self._drain(timeout_s=90)
        for probe in self.probes:
            probe.join(timeout=60)

    def _idle(self, seconds: float) -> None:
        """Wait, restarting any daemon that exited on its own (and noting it)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for seat in self.seats:
                self._check_exit(seat)
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def _check_exit(self, seat: Seat) -> None:
        code = seat.current.process.poll()
        if code is None or seat.current.process.pid in seat.killed:
            return
        tail = seat.current.output()[-2000:]
        self.unexpected_exits.append({"daemon": seat.number, "code": code, "at": time.time(), "log": tail})
        print(f"daemon {seat.number} exited on its own with code {code}:\n{tail}", flush=True)
        self._replace(seat)

    def _replace(self, seat: Seat) -> None:
        seat.past.append(seat.current)
        seat.current = self._daemon()

    def _pick_kind(self) -> str:
        kinds = list(KINDS)
        if time.time() - self.last_master_fault < MASTER_FAULT_SPACING_S or not self.cluster.healthy():
            kinds = [k for k in kinds if k not in ("master_restart", "failover")]
        return self.rng.choice(kinds)

    def _fault(self, kind: str) -> None:
        fault = {
            "daemon_kill": self._kill_daemon,
            "daemon_stop": self._stop_daemon,
            "slot_kill": self._kill_slot,
            "master_restart": self._restart_master,
            "failover": self._failover,
        }[kind]()
        if fault is not None:
            fault.ended = time.time()
            self.faults.append(fault)
            whom = fault.pid or fault.server
            print(f"{fault.at - self.t0:7.1f} s  {kind:15} {whom}  {fault.detail}", flush=True)

    # --- faults -----------------------------------------------------------------------------------

    def _busy_seat(self) -> Seat:
        """A daemon running a job if any (a fault there has something to lose), else any."""
        busy = {pid for pid, _ in self._busy_slots()}
        running = [s for s in self.seats if busy & children(s.current.process.pid)]
        return self.rng.choice(running or self.seats)

    def _kill_daemon(self) -> Fault:
        seat = self._busy_seat()
        pid = seat.current.process.pid
        seat.killed.add(pid)
        fault = Fault("daemon_kill", time.time(), pid=pid)
        seat.current.kill()
        down_s = self.rng.uniform(2.0, 5.0)
        self._idle(down_s)
        self._replace(seat)
        fault.detail["down_s"] = round(down_s, 2)
        return fault

    def _stop_daemon(self) -> Fault:
        seat = self._busy_seat()
        pid = seat.current.process.pid
        frozen_s = self.rng.uniform(LEASE_S + 1.0, LEASE_S + 3.0)
        fault = Fault("daemon_stop", time.time(), pid=pid, detail={"frozen_s": round(frozen_s, 2)})
        os.kill(pid, signal.SIGSTOP)
        time.sleep(frozen_s)
        os.kill(pid, signal.SIGCONT)
        return fault

    def _kill_slot(self) -> Fault | None:
        """SIGKILL a slot that is running a job (as the recorder says); none running: another fault."""
        busy = sorted(self._busy_slots())
        if not busy:
            return None
        pid, job = self.rng.choice(busy)
        fault = Fault("slot_kill", time.time(), pid=pid, detail={"job": job})
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return None
        return fault

    def _busy_slots(self) -> set[tuple[int, str]]:
        recorder = redis.Redis.from_url(self.recorder.url)
        slots = {pid for seat in self.seats for pid in children(seat.current.process.pid)}
        busy = set()
        for execution in recorder.smembers("running"):
            pid, job = recorder.hmget(b"exec:" + execution, "pid", "job")
            if pid is not None and job is not None and int(pid) in slots:
                busy.add((int(pid), job.decode()))
        recorder.close()
        return busy

    def _restart_master(self) -> Fault:
        """SIGKILL the master and start it again from its AOF; if that took long enough, the
        sentinels fail over meanwhile and make it a replica."""
        fault = self._kill_master("master_restart")
        name = str(fault.server)
        down_s = self.rng.uniform(0.3, 3.0)
        time.sleep(down_s)
        self.cluster.start_server(name)
        fault.detail["down_s"] = round(down_s, 2)
        self._wait_healthy(fault)
        return fault

    def _failover(self) -> Fault:
        """SIGKILL the master; once the sentinels named the replica, bring the old one back as its replica."""
        fault = self._kill_master("failover")
        name = str(fault.server)
        other = "replica" if name == "master" else "master"
        fault.detail["sentinels_named_s"] = round(self.cluster.wait_for_master(other, timeout_s=60), 2)
        self._idle(self.rng.uniform(1.0, 4.0))
        self.cluster.start_server(name, replica_of=other)
        self._wait_healthy(fault)
        return fault

    def _kill_master(self, kind: str) -> Fault:
        """SIGKILL the current master, and start measuring how soon a job is claimed again."""
        name = self.cluster.current_master()
        assert name is not None
        fault = Fault(kind, time.time(), server=name)
        self.cluster.kill_server(name)
        self.last_master_fault = fault.at
        probe = threading.Thread(target=self._probe_service, args=(fault, name), daemon=True)
        probe.start()
        self.probes.append(probe)
        return fault

    def _wait_healthy(self, fault: Fault) -> None:
        deadline = time.monotonic() + 60
        while not self.cluster.healthy() and time.monotonic() < deadline:
            self._idle(0.1)
        fault.detail["healthy_after_s"] = round(time.time() - fault.at, 2)

    def _probe_service(self, fault: Fault, killed: str) -> None:
        """Seconds from the kill until the sentinels name another master, and until the first job
        claimed after the kill (RQ `started_at`) is in the started registry of the named master."""
        sentinel = Sentinel([("127.0.0.1", p) for p in self.cluster.sentinel_ports], socket_timeout=0.3)
        names = {port: name for name, port in self.cluster.ports.items()}
        while time.time() - fault.at < 60:
            try:
                name = names.get(sentinel.discover_master(SERVICE)[1])
            except (redis.RedisError, OSError):
                name = None
            if name is not None and name != killed and "named_s" not in fault.detail:
                fault.detail["named_s"] = round(time.time() - fault.at, 3)
            first = _first_claim_after(self.cluster.ports[name], fault.at) if name else None
            if first is not None:
                fault.detail["served_s"] = round(first - fault.at, 3)
                fault.detail["served_by"] = name
                return
            time.sleep(0.02)

    def _drain(self, timeout_s: float) -> None:
        """Wait until nothing is queued, claimed or running (stable for 3 s), at most `timeout_s`."""
        deadline, calm_since = time.monotonic() + timeout_s, None
        recorder = redis.Redis.from_url(self.recorder.url)
        while time.monotonic() < deadline:
            self._idle(0.5)
            busy = _backlog(self.cluster) + recorder.scard("running")
            calm_since = (calm_since or time.monotonic()) if busy == 0 else None
            if calm_since is not None and time.monotonic() - calm_since >= 3:
                break
        recorder.close()


def _first_claim_after(port: int, since: float) -> float | None:
    try:
        client = redis.Redis(port=port, socket_timeout=0.3, socket_connect_timeout=0.3)
        entries = client.zrange("rq:wip:p2", 0, -1)
        jobs = [entry.decode().split(":")[0] for entry in entries]
        times = [unix_seconds(client.hget(f"rq:job:{job}", "started_at")) for job in jobs]
        client.close()
    except (redis.RedisError, OSError):
        return None
    after = [t for t in times if t is not None and t > since]
    return min(after) if after else None


def _backlog(cluster: SentinelCluster) -> int:
    try:
        master = cluster.master()
        return int(master.llen("rq:queue:p2") + master.zcard("rq:wip:p2") + master.zcard("rq:scheduled:p2"))
    except (redis.RedisError, OSError, AssertionError):
        return 1


def _stop(daemon: DaemonProcess) -> int | None:
    if daemon.process.poll() is not None:
        return daemon.process.returncode
    try:
        return daemon.stop(timeout_s=30)
    except AssertionError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="producer and faults (default 5)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=float, default=10.0, help="jobs enqueued per second")
    parser.add_argument(
        "--quiet-s", type=float, default=None, help="no faults in the last S s (30; 15 if <= 1 min)"
    )
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.quiet_s = args.quiet_s if args.quiet_s is not None else (15.0 if args.minutes <= 1 else 30.0)
    workdir = Path(tempfile.mkdtemp(prefix="asched-chaos-"))
    chaos = Chaos(args, workdir)
    began = datetime.datetime.now(datetime.UTC)
    try:
        chaos.start()
        chaos.run()
        exits = chaos.stop()
        facts = chaos_report.gather(chaos, exits)
    finally:
        chaos.close()
    config = {**vars(args), "results": str(args.results), "lease_ttl_s": LEASE_S}
    config |= {"down_after_ms": DOWN_AFTER_MS, "began_utc": began.strftime("%Y-%m-%d %H:%M UTC")}
    config["workdir"] = str(workdir)
    (workdir / "facts.json").write_text(json.dumps(facts, default=str) + "\n")
    report = chaos_report.analyse(facts, config)
    print(chaos_report.render(report))
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "chaos.md").write_text(chaos_report.render(report))
    (args.results / "chaos.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
