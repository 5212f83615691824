"""Wakes the idle daemon the moment a job lands in any of its queues, without taking the job.

RQ producers only RPUSH onto a list; there is no notification to subscribe to, and Redis cannot block on
several lists without popping. So one thread per queue blocks on `BLMOVE q q LEFT LEFT`, which moves
the head of q onto the head of q: a no-op on the data that returns as soon as q is non-empty. The
thread then writes a byte to a pipe the daemon's loop waits on. Threads block only while the daemon
has said it is idle (its last claim found the queues empty), so a busy daemon pays nothing.
"""

from __future__ import annotations

import os
import threading

import redis
from loguru import logger

BLOCK_S = 1.0  # how long one blocking call lasts, so threads notice a stop promptly


class Waker:
    """Threads that turn "a queue became non-empty" into a readable file descriptor."""

    def __init__(self, url: str, queue_keys: list[str]) -> None:
        self.fd, self._write_fd = os.pipe()
        os.set_blocking(self.fd, False)
        self.idle = threading.Event()
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._watch, args=(url, key), name=f"asched-waker-{key}", daemon=True)
            for key in queue_keys
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def drain(self) -> None:
        """Consume pending wake-up bytes (call when the loop woke on `fd`)."""
        try:
            while os.read(self.fd, 512):
                pass
        except BlockingIOError:
            pass

    def stop(self) -> None:
        self._stopping.set()
        self.idle.set()
        for thread in self._threads:
            thread.join(timeout=BLOCK_S + 1)
        os.close(self.fd)
        os.close(self._write_fd)

    def _watch(self, url: str, key: str) -> None:
        client = redis.Redis.from_url(url, socket_timeout=BLOCK_S + 5)
        try:
            while not self._stopping.is_set():
                if not self.idle.wait(timeout=BLOCK_S) or self._stopping.is_set():
                    continue
                try:
                    if client.blmove(key, key, BLOCK_S, "LEFT", "LEFT") is not None:
                        self.idle.clear()
                        os.write(self._write_fd, b"!")
                except redis.RedisError as exc:
                    logger.debug("waker for {} cannot reach Redis: {}", key, exc)
                    self._stopping.wait(BLOCK_S)
        finally:
            client.close()
