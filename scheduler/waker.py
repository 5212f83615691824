"""Tells the daemon the moment a queue it last found empty gets a job, without taking the job.

RQ producers only RPUSH onto a list; there is no notification to subscribe to, and Redis cannot block on
several lists without popping. So one thread per queue blocks on `BLMOVE q q LEFT LEFT`, which moves
the head of q onto the head of q: a no-op on the data that returns as soon as q is non-empty. The
thread then writes the queue's priority index to a pipe the daemon's loop polls.

A thread blocks only while its queue is *armed*: the daemon arms a queue when a claim emptied it, and
the thread disarms it when it fires. That serves two purposes: an idle daemon wakes within a
millisecond of an enqueue, and a busy daemon learns that a P0 job arrived before it hands the next,
less urgent, local job to a slot.
"""

from __future__ import annotations

import os
import threading

import redis
from loguru import logger

BLOCK_S = 1.0  # how long one blocking call lasts, so threads notice a stop promptly


class Waker:
    """One thread per queue that turns "this empty queue got a job" into a byte on `fd`."""

    def __init__(self, url: str, queue_keys: list[str]) -> None:
        self.fd, self._write_fd = os.pipe()
        os.set_blocking(self.fd, False)
        self._armed = [threading.Event() for _ in queue_keys]
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._watch, args=(url, key, i), name=f"asched-waker-{key}", daemon=True)
            for i, key in enumerate(queue_keys)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def arm(self, index: int) -> None:
        """Watch queue `index` (its last claim found it empty)."""
        self._armed[index].set()

    def fired(self) -> set[int]:
        """The priority indexes whose queues got a job since the last call (reads the pipe)."""
        indexes: set[int] = set()
        try:
            while chunk := os.read(self.fd, 512):
                indexes.update(chunk)
        except BlockingIOError:
            pass
        return indexes

    def stop(self) -> None:
        self._stopping.set()
        for event in self._armed:
            event.set()
        for thread in self._threads:
            thread.join(timeout=BLOCK_S + 1)
        os.close(self.fd)
        os.close(self._write_fd)

    def _watch(self, url: str, key: str, index: int) -> None:
        client = redis.Redis.from_url(url, socket_timeout=BLOCK_S + 5)
        armed = self._armed[index]
        try:
            while not self._stopping.is_set():
                if not armed.wait(timeout=BLOCK_S) or self._stopping.is_set():
                    continue
                try:
                    if client.blmove(key, key, BLOCK_S, "LEFT", "LEFT") is not None:
                        armed.clear()
                        os.write(self._write_fd, bytes([index]))
                except redis.RedisError as exc:
                    logger.debug("waker for {} cannot reach Redis: {}", key, exc)
                    self._stopping.wait(BLOCK_S)
        finally:
            client.close()
