"""Logging: a call site that fires per job cannot flood the log; stdlib records go through loguru."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
from adaptive_scheduler.logs import InterceptHandler, StormGuard
from loguru import logger


@pytest.fixture
def lines() -> Iterator[list[str]]:
    seen: list[str] = []
    sink = logger.add(seen.append, format="{message}", filter=StormGuard(burst=5, window_s=0.3))  # type: ignore[arg-type]
    yield seen
    logger.remove(sink)


def job_failed(n: int) -> None:
    logger.warning("job {} failed", n)  # one call site, as in the daemon


def test_a_busy_call_site_is_held_to_its_burst_and_says_how_many_it_held_back(lines: list[str]) -> None:
    for n in range(100):
        job_failed(n)
    logger.warning("a level change")  # another call site: not affected
    time.sleep(0.35)
    for n in range(100, 102):
        job_failed(n)
    assert [line.strip() for line in lines] == [
        *(f"job {n} failed" for n in range(5)),
        "a level change",
        "job 100 failed [95 more like this in the last 0.3 s held back]",
        "job 101 failed",
    ]


def test_stdlib_logging_goes_through_loguru(lines: list[str]) -> None:
    stdlib = logging.getLogger("rq.worker")
    stdlib.addHandler(InterceptHandler())
    try:
        stdlib.warning("from %s", "rq")
    finally:
        stdlib.handlers.clear()
    assert [line.strip() for line in lines] == ["from rq"]
