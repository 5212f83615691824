"""RQ's timestamp text ('%Y-%m-%dT%H:%M:%S.%fZ', UTC), written without datetime objects on the hot path."""

from __future__ import annotations

import time


def rq_timestamp(unix_s: float) -> str:
    """`unix_s` as RQ writes timestamps into job hashes."""
    whole = int(unix_s)
    micros = int((unix_s - whole) * 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{micros:06d}Z"
