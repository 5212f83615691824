"""Redis URLs: the Sentinel form parsed (pure)."""

from __future__ import annotations

import pytest
from adaptive_scheduler.redis_url import SentinelUrl, is_sentinel, parse_sentinel


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster/0",
            SentinelUrl(((("127.0.0.1", 26379)), ("127.0.0.1", 26380)), "mymaster", 0),
        ),
        (
            "redis+sentinel://:s%40cret@h1:1,h2:2/svc/3?sentinel_password=spw",
            SentinelUrl((("h1", 1), ("h2", 2)), "svc", 3, None, "s@cret", "spw"),
        ),
        (
            "rediss+sentinel://user:pw@[::1]:26379/svc",
            SentinelUrl((("::1", 26379),), "svc", 0, "user", "pw", None, tls=True),
        ),
    ],
)
def test_a_sentinel_url_names_its_sentinels_service_db_and_credentials(
    url: str, expected: SentinelUrl
) -> None:
    assert is_sentinel(url) and parse_sentinel(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel:///svc", "expected redis\\+sentinel://host:port"),
        ("redis+sentinel://h1:1", "expected redis\\+sentinel://host:port"),
        ("redis+sentinel://h1:x/svc", "is not host:port"),
        ("redis+sentinel://h1:1/svc/zero", "db must be a number"),
        ("redis://h1:1/0", "not a Sentinel URL"),
    ],
)
def test_a_malformed_sentinel_url_says_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_sentinel(url)


def test_plain_urls_are_not_sentinel_ones() -> None:
    assert not any(is_sentinel(u) for u in ("redis://h:1/0", "rediss://h:1", "unix:///tmp/r.sock"))
