"""Connecting to Redis from a URL: the plain forms (redis://, rediss://, unix://) and Redis Sentinel.

    redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]
    rediss+sentinel://...   (TLS to the sentinels and to the master)

The Sentinel form goes through redis-py's own `redis.sentinel`: the client it returns asks the
sentinels for the current master whenever it (re)connects, and drops its connections when the server
it reached turns out to be a replica (READONLY after a failover). The password, if any, is the data
nodes'; the sentinels are asked without one unless `sentinel_password` is given as a query parameter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.sentinel import Sentinel

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")


@dataclass(frozen=True, slots=True)
class SentinelUrl:
    """A parsed Sentinel URL."""

    hosts: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None
    tls: bool = False
    options: dict[str, str] = field(default_factory=dict)


def is_sentinel(url: str) -> bool:
    return url.split("://", 1)[0] in SENTINEL_SCHEMES


def parse_sentinel(url: str) -> SentinelUrl:
    """The parts of a Sentinel URL.

    Raises:
        ValueError: no host, a port that is not a number, no service name, or a db that is not one.
    """
    parts = urlsplit(url)
    if parts.scheme not in SENTINEL_SCHEMES:
        raise ValueError(f"not a Sentinel URL (use {' or '.join(s + '://' for s in SENTINEL_SCHEMES)})")
    netloc = parts.netloc.rpartition("@")[2]
    hosts = tuple(_host_port(item) for item in netloc.split(",") if item)
    path = [piece for piece in parts.path.split("/") if piece]
    if not hosts or not path or len(path) > 2:
        raise ValueError("expected redis+sentinel://host:port[,host:port...]/service[/db]")
    if len(path) == 2 and not path[1].isdigit():
        raise ValueError(f"db must be a number, got {path[1]!r}")
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    return SentinelUrl(
        hosts,
        unquote(path[0]),
        int(path[1]) if len(path) == 2 else 0,
        unquote(parts.username) if parts.username else None,
        unquote(parts.password) if parts.password else None,
        query.pop("sentinel_password", None),
        parts.scheme.startswith("rediss"),
        query,
    )


def _host_port(item: str) -> tuple[str, int]:
    host, _, port = item.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"sentinel address {item!r} is not host:port")
    return host.strip("[]"), int(port)


def connect(url: str, **options: Any) -> redis.Redis:
    """A client for `url` (any supported form); `options` are redis-py's (socket_timeout, ...)."""
    if not is_sentinel(url):
        return redis.Redis.from_url(url, **options)
    spec = parse_sentinel(url)
    sentinel = sentinels(spec, options.get("socket_timeout", 5), **options)
    return sentinel.master_for(spec.service, db=spec.db, username=spec.username, password=spec.password)


def sentinels(spec: SentinelUrl, sentinel_timeout: float, **options: Any) -> Sentinel:
    """redis-py's `Sentinel` for the URL's sentinels, asked with its sentinel password and TLS;
    `options` are for the connections to the master it names."""
    tls = {"ssl": True} if spec.tls else {}
    sentinel_options = {"password": spec.sentinel_password, **tls} if spec.sentinel_password else tls
    return Sentinel(
        list(spec.hosts),
        sentinel_kwargs={"socket_timeout": sentinel_timeout, **sentinel_options},
        **options,
        **tls,
    )
