"""Which server the sentinels name as master, asked from a thread once a second.

After a failover a daemon usually learns of the new master from the old one: it is demoted to a
replica and answers READONLY, and the daemon reconnects. But a master killed and restarted while its
replica is being promoted comes back still calling itself master, and stays so until the sentinels
demote it (about 10 s in `bench.chaos`): a daemon connected to it claims from queues producers no
longer write to, and writes outcomes that the demotion then drops. So the daemon compares the server
its exchange connection reached with the one the sentinels name (`Daemon._check_master`). The
question is asked from a thread: sentinels that do not answer must not stall the daemon's loop.
"""

from __future__ import annotations

import threading

import redis
from adaptive_scheduler.redis_url import is_sentinel, parse_sentinel, sentinels

ASK_EVERY_S = 1.0
SENTINEL_TIMEOUT_S = 0.5


class MasterWatch:
    """The sentinels' latest answer (`named`), refreshed in the background."""

    def __init__(self, url: str, every_s: float = ASK_EVERY_S) -> None:
        spec = parse_sentinel(url)
        self._sentinel = sentinels(spec, SENTINEL_TIMEOUT_S)
        self._service = spec.service
        self._every_s = every_s
        self._stopped = threading.Event()
        self.named: tuple[str, int] | None = None  # written by the thread only, read by the loop
        self._thread = threading.Thread(target=self._run, name="master-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                host, port = self._sentinel.discover_master(self._service)
                self.named = (str(host), int(port))
            except redis.RedisError:  # no sentinel answered, or none names a master: keep the last answer
                pass
            self._stopped.wait(self._every_s)


def watch_master(url: str) -> MasterWatch | None:
    """A watch for a Sentinel URL; None for the plain forms (one server, nothing to compare)."""
    return MasterWatch(url) if is_sentinel(url) else None
