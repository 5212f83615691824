"""A StatsD listener for tests: a real UDP socket that collects and parses what the daemon sends."""

from __future__ import annotations

import socket
from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class Received:
    """Metrics seen so far, by kind: counters summed, gauges' last value, timers' values."""

    counters: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    gauges: dict[str, float] = field(default_factory=dict)
    timers: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    lines: list[str] = field(default_factory=list)

    def names(self) -> set[str]:
        return set(self.counters) | set(self.gauges) | set(self.timers)


class StatsdListener:
    """Bound on 127.0.0.1 at a free port; `url` is what the daemon's `statsd_url` setting takes."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.url = f"udp://127.0.0.1:{self.sock.getsockname()[1]}"
        self.received = Received()

    def drain(self) -> Received:
        """Read every datagram waiting and fold it into `received`."""
        while True:
            try:
                packet = self.sock.recv(65535)
            except BlockingIOError:
                return self.received
            for line in packet.decode("ascii").splitlines():
                self._fold(line)

    def _fold(self, line: str) -> None:
        self.received.lines.append(line)
        name, _, rest = line.partition(":")
        value, kind = rest.split("|")[:2]
        if kind == "c":
            self.received.counters[name] += float(value)
        elif kind == "g":
            self.received.gauges[name] = float(value)
        elif kind == "ms":
            self.received.timers[name].append(float(value))
        else:
            raise AssertionError(f"unexpected StatsD line {line!r}")

    def close(self) -> None:
        self.sock.close()
