"""A real Redis Sentinel deployment on loopback for tests: a master, a replica and three sentinels.

Every process is a real `redis-server` (the sentinels run with `--sentinel`), on free TCP ports of
127.0.0.1 (Sentinel needs TCP), in a temporary directory; `kill_master` SIGKILLs the master, as a
crash would, and `wait_for_failover` waits until the sentinels name the replica as the new master.

For repeated faults (bench.chaos) the two data servers keep their names ("master", "replica": their
roles at start) while their roles change: `kill_server` and `start_server` crash and restart either
one (from its own AOF with `appendonly=True`), as a replica of the current master if asked, and
`current_master` says which one the sentinels name now.
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis
from adaptive_scheduler.redis_server import find_binary, stop_process
from redis.sentinel import Sentinel

SERVICE = "mym"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class SentinelCluster:
    def __init__(self, appendonly: bool = False, down_after_ms: int = 1000) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="asched-sentinel-"))
        self.master_port, self.replica_port = free_port(), free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.appendonly = appendonly
        self.down_after_ms = down_after_ms

    @property
    def ports(self) -> dict[str, int]:
        return {"master": self.master_port, "replica": self.replica_port}

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def start(self) -> SentinelCluster:
        self.start_server("master")
        self.start_server("replica", replica_of="master")
        for i, port in enumerate(self.sentinel_ports):
            config = self.directory / f"sentinel{i}.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.directory}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.master_port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}\n"
                f"sentinel failover-timeout {SERVICE} 5000\n"
            )
            self._spawn(f"sentinel{i}", [str(config), "--sentinel"])
        self._wait(lambda: self.master_address() == ("127.0.0.1", self.master_port), 15)
        self._wait(lambda: self._replicas_known(), 15)
        return self

    def master_address(self) -> tuple[str, int] | None:
        try:
            return Sentinel(
                [("127.0.0.1", p) for p in self.sentinel_ports], socket_timeout=0.5
            ).discover_master(SERVICE)
        except (redis.RedisError, OSError):
            return None

    def master(self) -> redis.Redis:
        address = self.master_address()
        assert address is not None
        return redis.Redis(*address)

    def kill_master(self) -> None:
        process = self.processes.pop("master")
        process.kill()
        process.wait()

    def wait_for_failover(self, timeout_s: float = 20.0) -> float:
        """Seconds until the sentinels name the replica as master."""
        started = time.monotonic()
        self._wait(lambda: self.master_address() == ("127.0.0.1", self.replica_port), timeout_s)
        return time.monotonic() - started

    def current_master(self) -> str | None:
        """The name ("master" or "replica") of the server the sentinels name as master now."""
        address = self.master_address()
        names = {port: name for name, port in self.ports.items()}
        return names.get(address[1]) if address else None

    def kill_server(self, name: str) -> None:
        """SIGKILL one data server, as a crash would."""
        process = self.processes.pop(name)
        process.kill()
        process.wait()

    def start_server(self, name: str, replica_of: str | None = None) -> None:
        """Start a data server (again: from its AOF when the cluster has one), as a replica of the
        server named `replica_of` if given; the sentinels reconfigure it if its role has changed."""
        extra = ["--replicaof", "127.0.0.1", str(self.ports[replica_of])] if replica_of else []
        self._server(name, self.ports[name], *extra)

    def wait_for_master(self, name: str, timeout_s: float = 20.0) -> float:
        """Seconds until the sentinels name the server `name` as master."""
        started = time.monotonic()
        self._wait(lambda: self.current_master() == name, timeout_s)
        return time.monotonic() - started

    def healthy(self) -> bool:
        """Both data servers up, the replica in sync with the master, and every sentinel knows it."""
        master = self.current_master()
        if master is None or set(self.processes) < {"master", "replica"}:
            return False
        replica = "replica" if master == "master" else "master"
        return self._replica_known(self.ports[replica])

    def stop(self) -> None:
        for process in self.processes.values():
            stop_process(process, timeout_s=5)
        self.processes.clear()

    def _replicas_known(self) -> bool:
        """The replica is in sync with the master, and every sentinel knows it."""
        return self._replica_known(self.replica_port)

    def _replica_known(self, port: int) -> bool:
        try:
            replica = redis.Redis(port=port, socket_timeout=0.5)
            if replica.info("replication").get("master_link_status") != "up":
                return False
            sentinels = [redis.Redis(port=port, socket_timeout=0.5) for port in self.sentinel_ports]
            return all(len(sentinel.sentinel_slaves(SERVICE)) == 1 for sentinel in sentinels)
        except (redis.RedisError, OSError):
            return False

    def _server(self, name: str, port: int, *extra: str) -> None:
        aof = "yes" if self.appendonly else "no"
        persistence = ["--save", "", "--appendonly", aof, "--repl-diskless-sync-delay", "0"]
        persistence += ["--appenddirname", f"aof-{name}", "--dbfilename", f"dump-{name}.rdb"]
        self._spawn(
            name,
            ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(self.directory), *persistence, *extra],
        )
        self._wait(lambda: _answers(port), 10)

    def _spawn(self, name: str, args: list[str]) -> None:
        log = (self.directory / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            [find_binary(), *args], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    @staticmethod
    def _wait(predicate: object, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():  # type: ignore[operator]
                return
            time.sleep(0.05)
        raise AssertionError(f"sentinel cluster: condition not met within {timeout_s} s")


def _answers(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_timeout=0.5).ping())
    except (redis.RedisError, OSError):
        return False
