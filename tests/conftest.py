"""Fixtures: a real redis-server for the whole session (unix socket, no persistence), flushed per test."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from adaptive_scheduler.redis_server import RedisServer

from tests.sentinel_cluster import SentinelCluster


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server started for this test session and stopped after it."""
    with tempfile.TemporaryDirectory(prefix="asched-test-") as directory:
        server = RedisServer(Path(directory), persistent=False).start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture()
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The session server's URL, with an empty database before and after the test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    yield redis_server.url
    client.flushdb()
    client.close()


@pytest.fixture()
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


@pytest.fixture()
def cluster() -> Iterator[SentinelCluster]:
    """A real Redis Sentinel deployment on loopback (master, replica, three sentinels), stopped after."""
    started = SentinelCluster().start()
    try:
        yield started
    finally:
        started.stop()
