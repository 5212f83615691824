"""RQ's timestamp text ('%Y-%m-%dT%H:%M:%S.%fZ', UTC), written without datetime objects on the hot path."""

from __future__ import annotations

import time
from datetime import datetime
from functools import lru_cache


def rq_timestamp(unix_s: float) -> str:
    """`unix_s` as RQ writes timestamps into job hashes."""
    whole = int(unix_s)
    return f"{_seconds_text(whole)}.{int((unix_s - whole) * 1_000_000):06d}Z"


@lru_cache(maxsize=4)
def _seconds_text(whole: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))


def unix_seconds(text: bytes | str | None) -> float | None:
    """An RQ timestamp as unix seconds; None when absent or not a timestamp."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.decode() if isinstance(text, bytes) else text).timestamp()
    except (ValueError, UnicodeDecodeError):
        return None
