"""The Grafana dashboard against a real Graphite: StatsD -> carbon-cache -> whisper -> graphite-web.

Starts Etsy's StatsD (graphite backend, `legacyNamespace: false`, 1 s flush), carbon-cache (1 s
retention) and graphite-web (Django's development server), all on free ports of 127.0.0.1 with their
files in a temporary directory, and a daemon (3 slots, a 300 MB budget, its own redis-server) sending
its metrics to that StatsD. A mixed workload runs for `--seconds` (default 60): small jobs of every
priority, a failing task (its circuit breaker opens, defers, retries), a periodic heartbeat every
second, checkpointing P2/P3 sums, a P1 job holding 200 MiB (HIGH: P2/P3 preempted, heartbeats
skipped) and later a P0 job holding 250 MiB (EMERGENCY: preempted, shed, put back).

Then every target of systemd/grafana-dashboard.json, its template variables filled in, is asked of
graphite-web's /render as JSON (the run fails if one returns no series), the host variable's query
is asked of /metrics/find, and a few panels are rendered by graphite-web as PNG into
bench/results/dashboard-*.png (the pressure chart with its 70/85/95 bands drawn as threshold lines);
the table of targets goes to bench/results/dashboard.md.

carbon, whisper and graphite-web pin their own Django and Twisted, so they live in .venv-graphite
(created on first use, about 30 s); StatsD comes from npm into .statsd/ as `./dev test` installs it.

    python -m bench.dashboard [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import redis
from adaptive_scheduler.metrics import expand_prefix
from adaptive_scheduler.redis_server import RedisServer
from rq import Queue, Retry
from rq.serializers import JSONSerializer

from tests.helpers import FIXTURES

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DASHBOARD = ROOT / "systemd" / "grafana-dashboard.json"
GRAPHITE_VENV = ROOT / ".venv-graphite"
GRAPHITE_PACKAGES = ("carbon==1.1.10", "whisper==1.1.10", "graphite-web==1.1.10")
STATSD_JS = ROOT / ".statsd" / "node_modules" / "statsd" / "stats.js"
STATSD_PACKAGE = "statsd@0.9.0"
PREFIX = "asched"
RENDERED = {  # file stem -> dashboard panel title
    "pressure": "Memory pressure %",
    "outcomes": "Pressure outcomes per priority (jobs/s)",
    "throughput": "Throughput per priority (jobs/s)",
    "memory": "Memory per process",
}
BANDS = ((70, "ELEVATED 70 %", "yellow"), (85, "HIGH 85 %", "orange"), (95, "EMERGENCY 95 %", "red"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(check: object, what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise SystemExit(f"bench.dashboard: {what} did not come up within {timeout_s:g} s")


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def ensure_tools() -> None:
    """The Graphite venv and StatsD, installed on first use."""
    if not (GRAPHITE_VENV / "bin" / "carbon-cache.py").exists():
        print("bench.dashboard: installing carbon, whisper, graphite-web into .venv-graphite", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(GRAPHITE_VENV)], check=True)
        pip = [str(GRAPHITE_VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check"]
        env = {**os.environ, "GRAPHITE_NO_PREFIX": "True"}  # into the venv, not /opt/graphite
        subprocess.run([*pip, *GRAPHITE_PACKAGES], check=True, env=env)
    if not STATSD_JS.exists():
        print("bench.dashboard: installing statsd (npm) into .statsd/", flush=True)
        npm = ["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", ".statsd", STATSD_PACKAGE]
        subprocess.run(npm, check=True, cwd=ROOT)


class Graphite:
    """carbon-cache and graphite-web on free ports, their configuration and data under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.line_port, self.pickle_port, self.query_port, self.web_port = (free_port() for _ in range(4))
        storage = root / "storage"
        for directory in (root / "conf", storage / "whisper", storage / "log" / "webapp"):
            directory.mkdir(parents=True, exist_ok=True)
        self._write_config(storage)
        self.env = {
            **os.environ,
            "GRAPHITE_ROOT": str(root),
            "GRAPHITE_CONF_DIR": str(root / "conf"),
            "GRAPHITE_STORAGE_DIR": str(storage),
            "GRAPHITE_SETTINGS_MODULE": "bench_graphite_settings",
            "DJANGO_SETTINGS_MODULE": "graphite.settings",
            "PYTHONPATH": str(root),
        }
        self.processes: list[subprocess.Popen[bytes]] = []

    def _write_config(self, storage: Path) -> None:
        conf = self.root / "conf"
        (conf / "carbon.conf").write_text(
            "[cache]\n"
            f"STORAGE_DIR = {storage}/\nLOCAL_DATA_DIR = {storage}/whisper/\n"
            f"WHITELISTS_DIR = {storage}/lists/\nLOG_DIR = {storage}/log/\nPID_DIR = {storage}/\n"
            "ENABLE_LOGROTATION = False\nUSER =\nMAX_CACHE_SIZE = inf\nMAX_UPDATES_PER_SECOND = 5000\n"
            "MAX_CREATES_PER_MINUTE = inf\nCACHE_WRITE_STRATEGY = sorted\nENABLE_UDP_LISTENER = False\n"
            f"LINE_RECEIVER_INTERFACE = 127.0.0.1\nLINE_RECEIVER_PORT = {self.line_port}\n"
            f"PICKLE_RECEIVER_INTERFACE = 127.0.0.1\nPICKLE_RECEIVER_PORT = {self.pickle_port}\n"
            f"CACHE_QUERY_INTERFACE = 127.0.0.1\nCACHE_QUERY_PORT = {self.query_port}\n"
        )
        (conf / "storage-schemas.conf").write_text("[everything]\npattern = .*\nretentions = 1s:6h\n")
        (conf / "storage-aggregation.conf").write_text(
            "[count]\npattern = \\.count$\nxFilesFactor = 0\naggregationMethod = sum\n\n"
            "[default]\npattern = .*\nxFilesFactor = 0.3\naggregationMethod = average\n"
        )
        (self.root / "bench_graphite_settings.py").write_text(
            f"SECRET_KEY = 'bench-only'\nCARBONLINK_HOSTS = ['127.0.0.1:{self.query_port}']\n"
            f"LOG_DIR = '{storage}/log/webapp'\nTIME_ZONE = 'UTC'\n"
        )

    def start(self) -> Graphite:
        bin_dir = GRAPHITE_VENV / "bin"
        conf = self.root / "conf" / "carbon.conf"
        self._spawn(
            "carbon",
            [bin_dir / "python", bin_dir / "carbon-cache.py", f"--config={conf}", "--debug", "start"],
        )
        admin = [bin_dir / "python", bin_dir / "django-admin"]
        subprocess.run([*admin, "migrate", "-v", "0"], env=self.env, check=True, cwd=self.root)
        self._spawn("graphite-web", [*admin, "runserver", "--noreload", f"127.0.0.1:{self.web_port}"])
        wait_for(lambda: listening(self.line_port), "carbon-cache")
        wait_for(lambda: listening(self.web_port), "graphite-web")
        return self

    def _spawn(self, name: str, command: list[object]) -> None:
        log = (self.root / f"{name}.log").open("wb")
        self.processes.append(
            subprocess.Popen([str(c) for c in command], env=self.env, cwd=self.root, stdout=log, stderr=log)
        )

    def get(self, path: str, **params: object) -> bytes:
        query = urllib.parse.urlencode(params, doseq=True)
        url = f"http://127.0.0.1:{self.web_port}{path}?{query}"
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.read()

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def start_statsd(directory: Path, carbon_port: int) -> tuple[subprocess.Popen[bytes], int]:
    port, mgmt_port = free_port(), free_port()
    config = directory / "statsd-config.js"
    config.write_text(
        f'{{ address: "127.0.0.1", port: {port}, mgmt_address: "127.0.0.1", mgmt_port: {mgmt_port}, '
        f'flushInterval: 1000, backends: ["./backends/graphite"], graphiteHost: "127.0.0.1", '
        f"graphitePort: {carbon_port}, graphite: {{ legacyNamespace: false }} }}\n"
    )
    log = (directory / "statsd.log").open("wb")
    process = subprocess.Popen(["node", str(STATSD_JS), str(config)], stdout=log, stderr=log)
    wait_for(lambda: listening(mgmt_port), "statsd")
    return process, port


def workload(client: redis.Redis, seconds: float, down: Path) -> int:
    """Arrivals for `seconds`; returns how many jobs were enqueued.

    Every 0.25 s a short sleep job of a random priority and, now and then, a heartbeat; every 3 s a
    job of a flaky task (retried once) that fails while `down` exists, which is removed at 40 %: its
    breaker opens, defers jobs, and closes after a good trial. Memory: a P3 checkpointing sum from 5 %
    and a P2 one from 20 %, a P1 job holding 200 MiB from 30 % (HIGH: the sums are preempted), a burst
    of P2/P3 jobs past their deadline at 57 %, a P1 sum at 58 % and a P0 job holding 250 MiB at 60 %
    (EMERGENCY: the P1 sum is preempted, the waiting P2/P3 jobs shed or put back).
    """
    queues = [Queue(f"p{p}", connection=client, serializer=JSONSerializer) for p in range(4)]
    rng = random.Random(5)

    def long_sum(priority: int, share: float) -> None:  # about `share` of the run: 200k per 55 ms
        queues[priority].enqueue(
            "tests.fixtures.jobs.long_sum", int(share * seconds / 0.055) * 200_000, 200_000, 0.05
        )

    def burst() -> None:
        for i in range(10):
            queues[2 + i % 2].enqueue("tests.fixtures.jobs.sleep", 0.3, meta={"deadline": time.time()})

    events = [
        (0.05, lambda: long_sum(3, 0.5)),
        (0.20, lambda: long_sum(2, 0.25)),
        (0.30, lambda: queues[1].enqueue("tests.fixtures.jobs.allocate", 200, 0.12 * seconds)),
        (0.57, burst),
        (0.58, lambda: long_sum(1, 0.15)),
        (0.60, lambda: queues[0].enqueue("tests.fixtures.jobs.allocate", 250, 0.08 * seconds)),
    ]
    down.touch()
    count, next_flaky, started = 0, 1.0, time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        while events and events[0][0] * seconds <= elapsed:
            events.pop(0)[1]()
        priority = rng.choices(range(4), weights=(1, 3, 3, 2))[0]
        queues[priority].enqueue("tests.fixtures.jobs.sleep", rng.uniform(0.01, 0.3))
        if rng.random() < 0.15:
            queues[rng.choice((1, 3))].enqueue("tests.fixtures.jobs.heartbeat", ttl=30)
        if elapsed >= next_flaky:
            queues[2].enqueue("tests.fixtures.jobs.fail_while", str(down), retry=Retry(max=1))
            next_flaky += 3.0
        if elapsed >= 0.4 * seconds and down.exists():
            down.unlink()
        count += 1
        time.sleep(0.25)
    return count


def run_daemon(directory: Path, statsd_port: int, seconds: float) -> str:
    """A daemon on its own redis-server under the workload; returns its log."""
    server = RedisServer(directory / "redis", persistent=False).start()
    env = {
        **os.environ,
        "ASCHED_REDIS_URL": server.url,
        "ASCHED_STATSD_URL": f"udp://127.0.0.1:{statsd_port}",
        "ASCHED_STATSD_PREFIX": PREFIX + ".{host}",
        "ASCHED_SLOTS": "3",
        **FIXTURES,
        "ASCHED_MEMORY_BUDGET": "300MB",
        "ASCHED_PRESSURE_HOLD_S": "1",
        "ASCHED_BREAKER_COOLDOWN_S": "5",
        "ASCHED_PERIODIC": json.dumps([{"name": "beat", "task": "heartbeat", "every_s": 1}]),
    }
    log_path = directory / "daemon.log"
    with log_path.open("wb") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "adaptive_scheduler", "run"], cwd=ROOT, env=env, stdout=log, stderr=log
        )
    client = redis.Redis.from_url(server.url)
    try:
        wait_for(lambda: any(client.scan_iter(match="asched:status:*")), "the daemon")
        enqueued = workload(client, seconds, directory / "dependency-down")
        print(f"bench.dashboard: {enqueued} jobs enqueued over {seconds:g} s", flush=True)
        time.sleep(5)  # the last flushes: daemon (1 s) -> StatsD (1 s) -> carbon
    finally:
        daemon.terminate()
        daemon.wait(60)
        client.close()
        server.stop()
    return log_path.read_text(errors="replace")


def expand(text: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        text = text.replace(f"${{{name}}}", value).replace(f"${name}", value)
    return text


def check_targets(graphite: Graphite, values: dict[str, str], window: str) -> list[tuple[str, str, int, int]]:
    """Each dashboard target asked of /render as JSON: (panel, target, series, non-null points)."""
    rows = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            expression = expand(target["target"], values)
            series = json.loads(graphite.get("/render", target=expression, format="json", **{"from": window}))
            points = sum(1 for s in series for value, _ts in s["datapoints"] if value is not None)
            rows.append((panel["title"], expression, len(series), points))
    return rows


def render(graphite: Graphite, values: dict[str, str], window: str) -> list[Path]:
    panels = {p["title"]: p for p in json.loads(DASHBOARD.read_text())["panels"]}
    written = []
    for stem, title in RENDERED.items():
        targets = [expand(t["target"], values) for t in panels[title]["targets"]]
        if stem == "pressure":
            targets += [f"threshold({value}, '{label}', '{color}')" for value, label, color in BANDS]
        png = graphite.get(
            "/render",
            target=targets,
            format="png",
            width=1000,
            height=560,
            hideLegend="false",
            title=f"{title} ({values['host']})",
            bgcolor="white",
            fgcolor="black",
            majorGridLineColor="#cccccc",
            minorGridLineColor="#eeeeee",
            lineWidth=2,
            yMin=0,
            **{"from": window},
        )
        path = RESULTS / f"dashboard-{stem}.png"
        path.write_bytes(png)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long jobs arrive (default 60)")
    args = parser.parse_args(argv)
    ensure_tools()
    RESULTS.mkdir(parents=True, exist_ok=True)
    began = time.time()
    with tempfile.TemporaryDirectory(prefix="asched-graphite-") as tmp:
        directory = Path(tmp)
        graphite = Graphite(directory / "graphite").start()
        statsd, statsd_port = start_statsd(directory, graphite.line_port)
        try:
            log = run_daemon(directory, statsd_port, args.seconds)
            window = f"-{int(time.time() - began) + 5}s"
            values = {"prefix": PREFIX, "host": expand_prefix("{host}")}
            found = json.loads(graphite.get("/metrics/find", query=f"stats.gauges.{PREFIX}.*"))
            rows = check_targets(graphite, values, window)
            pngs = render(graphite, values, window)
        finally:
            statsd.terminate()
            statsd.wait(10)
            graphite.stop()
            if os.environ.get("BENCH_KEEP"):
                shutil.copytree(directory, RESULTS / "dashboard-run.tmp", dirs_exist_ok=True)
    return report(rows, found, values, pngs, log)


def report(
    rows: list[tuple[str, str, int, int]],
    found: list[dict],
    values: dict[str, str],
    pngs: list[Path],
    log: str,
) -> int:
    """Prints the table of targets and writes it, with the level changes, to bench/results/dashboard.md."""
    hosts = [node["text"] for node in found]
    changes = [
        line.split("memory pressure ", 1)[1].split(" (")[0]
        for line in log.splitlines()
        if "memory pressure " in line and " -> " in line
    ]
    lines = [
        "| panel | target (template variables filled in) | series | points |",
        "|---|---|---|---|",
        *(f"| {panel} | `{target}` | {series} | {points} |" for panel, target, series, points in rows),
        "",
        f"Host variable (`stats.gauges.{PREFIX}.*` in /metrics/find): {', '.join(hosts) or 'nothing'}.",
        f"Level changes: {'; '.join(changes) or 'none'}.",
        "Rendered by graphite-web: " + ", ".join(f"`{p.relative_to(ROOT)}`" for p in pngs) + ".",
    ]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    (RESULTS / "dashboard.md").write_text(text)
    empty = [row[:2] for row in rows if row[2] == 0 or row[3] == 0]
    if values["host"] not in hosts or empty:
        host = values["host"]
        print(f"bench.dashboard: FAILED: host {host} found: {host in hosts}; targets without data: {empty}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
