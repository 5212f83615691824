"""RQ's timestamp text ('%Y-%m-%dT%H:%M:%S.%fZ', UTC), written without datetime objects on the hot path."""

from __future__ import annotations

import time
from functools import lru_cache


def rq_timestamp(unix_s: float) -> str:
    """`unix_s` as RQ writes timestamps into job hashes."""
    whole = int(unix_s)
    return f"{_seconds_text(whole)}.{int((unix_s - whole) * 1_000_000):06d}Z"


@lru_cache(maxsize=4)
def _seconds_text(whole: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
