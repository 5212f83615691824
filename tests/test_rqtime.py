"""RQ timestamps: ours must read back through RQ's own parser to the same instant."""

from __future__ import annotations

from datetime import UTC, datetime

from adaptive_scheduler.rqtime import rq_timestamp
from hypothesis import given
from hypothesis import strategies as st
from rq.utils import utcformat, utcparse


@given(st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False))
def test_our_timestamps_are_rqs(unix_s: float) -> None:
    ours = rq_timestamp(unix_s)
    assert abs(utcparse(ours).timestamp() - unix_s) < 1e-5
    assert ours == utcformat(utcparse(ours))


def test_a_known_instant() -> None:
    assert rq_timestamp(datetime(2026, 11, 23, 1, 2, 3, 456789, tzinfo=UTC).timestamp()) == (
        "2026-11-23T01:02:03.456789Z"
    )
