"""exchange.lua's own clock (lua/server_time.lua), run by a real Redis: RQ's ISO text for any date, and
Redis's time."""

from __future__ import annotations

import calendar
import time
from importlib.resources import files

import pytest
import redis
from adaptive_scheduler.rqtime import rq_timestamp

SOURCE = files("adaptive_scheduler.lua").joinpath("server_time.lua").read_text()

DATES = [
    "1970-01-01 00:00:00",
    "1999-12-31 23:59:59",
    "2000-02-29 12:00:00",  # a leap day of a century divisible by 400
    "2024-02-29 23:59:59",
    "2024-03-01 00:00:00",
    "2026-12-06 05:10:07",
    "2100-02-28 23:59:59",  # 2100 is no leap year
    "2100-03-01 00:00:00",
    "2400-02-29 06:30:00",
]


@pytest.mark.parametrize("date", DATES)
def test_the_iso_text_of_a_time_is_rqs(client: redis.Redis, date: str) -> None:
    whole = calendar.timegm(time.strptime(date, "%Y-%m-%d %H:%M:%S"))
    for micros in (0, 7, 999_999):
        text = client.eval(SOURCE + "return rq_iso(tonumber(ARGV[1]), tonumber(ARGV[2]))", 0, whole, micros)
        assert text.decode() == f"{rq_timestamp(whole)[:-7]}{micros:06d}Z"  # RQ's text, to the microsecond


def test_server_time_is_redis_clock_with_its_text(client: redis.Redis) -> None:
    before = time.time()
    now, text = client.eval(SOURCE + "local now, iso = server_time() return {tostring(now), iso}", 0)
    after = time.time()
    assert before - 0.01 <= float(now) <= after + 0.01
    assert text.decode()[:19] == time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(float(now))))
