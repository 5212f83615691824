"""Payload decoding: what runs, what is refused, and the words used to refuse it (pure, no I/O)."""

from __future__ import annotations

import json
import pickle
import zlib

import pytest
from adaptive_scheduler.errors import PayloadError, TaskNotAllowed
from adaptive_scheduler.model import JobOptions
from adaptive_scheduler.payload import decode_call, decode_options, retry_interval_s
from adaptive_scheduler.tasks import is_allowed
from hypothesis import given
from hypothesis import strategies as st

JOBS = ("tests.fixtures.jobs",)
DEFAULTS = JobOptions(timeout_s=180, result_ttl_s=500, failure_ttl_s=1000)


def rq_data(func: str, args: list[object] | None = None, kwargs: dict[str, object] | None = None) -> bytes:
    """A payload exactly as RQ's JSONSerializer and job.to_dict() store it."""
    return zlib.compress(json.dumps([func, None, args or [], kwargs or {}]).encode())


def test_an_allowlisted_call_decodes_to_its_arguments() -> None:
    call = decode_call(rq_data("tests.fixtures.jobs.add", [1, 2], {"x": 3}), "json", JOBS)
    assert (call.func_path, call.args, call.kwargs) == ("tests.fixtures.jobs.add", (1, 2), {"x": 3})


def test_a_function_of_an_allowed_module_is_accepted() -> None:
    assert decode_call(rq_data("myapp.jobs.send"), "json", ("myapp.jobs",)).func_path == "myapp.jobs.send"


@pytest.mark.parametrize(
    "func", ["os.system", "builtins.eval", "tests.fixtures.jobs", "myapp.jobs.x.y", "subprocess.run"]
)
def test_anything_else_is_not_allowed_and_the_message_lists_what_is(func: str) -> None:
    with pytest.raises(
        TaskNotAllowed, match=rf"task '{func}' is not allowed \(allowed: functions of myapp.jobs\)$"
    ):
        decode_call(rq_data(func), "json", ("myapp.jobs",))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (None, "no payload"),
        (b"", "no payload"),
        (zlib.compress(pickle.dumps(("tests.fixtures.jobs.add", None, (), {}))), "payload is pickle"),
        (b"\xff\xfe garbage", "not valid JSON"),
        (zlib.compress(b'{"a": 1}'), "not RQ's"),
        (zlib.compress(b"[1, null, [], {}]"), "names no function"),
        (zlib.compress(b'["tests.fixtures.jobs.add", {"self": 1}, [], {}]'), "instance methods"),
        (zlib.compress(b'["tests.fixtures.jobs.add", null, {}, []]'), "args must be a list"),
    ],
)
def test_malformed_payloads_raise_a_payload_error_that_says_why(data: bytes | None, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        decode_call(data, "json", JOBS)


def test_nothing_runs_when_the_operator_allowed_nothing() -> None:
    with pytest.raises(TaskNotAllowed, match=r"allowed: nothing; list your job modules in allowed_modules"):
        decode_call(rq_data("tests.fixtures.jobs.add", [1, 2]), "json", ())


def test_a_zip_bomb_is_refused_without_expanding_it() -> None:
    bomb = zlib.compress(b"[" + b" " * (65 * 1024 * 1024) + b"]")
    with pytest.raises(PayloadError, match="expands past the limit"):
        decode_call(bomb, "json", ())


@given(st.binary(max_size=300))
def test_any_bytes_either_decode_to_an_allowed_call_or_raise_a_payload_error(data: bytes) -> None:
    try:
        call = decode_call(data, "json", ())
    except PayloadError:
        return
    assert is_allowed(call.func_path, ())


def test_options_fall_back_to_the_defaults() -> None:
    assert decode_options({}, DEFAULTS) == DEFAULTS


def test_options_are_read_from_the_job_hash() -> None:
    fields = {
        "timeout": b"5",
        "result_ttl": b"-1",
        "failure_ttl": b"60",
        "retries_left": b"2",
        "retry_intervals": b"[1, 5]",
        "enqueue_at_front_on_retry": b"1",
    }
    options = decode_options(fields, DEFAULTS)
    assert options == JobOptions(5.0, -1, 60, 2, (1, 5), True)


def test_a_negative_timeout_means_no_timeout() -> None:
    assert decode_options({"timeout": b"-1"}, DEFAULTS).timeout_s == float("inf")


@pytest.mark.parametrize(
    ("field", "option"),
    [("success_callback_name", "on_success"), ("repeats_left", "repeat"), ("rate_limit_key", "rate_limit")],
)
def test_unsupported_options_are_named(field: str, option: str) -> None:
    with pytest.raises(PayloadError, match=f"RQ option '{option}' is not supported"):
        decode_options({field: b"x"}, DEFAULTS)


@pytest.mark.parametrize(
    ("intervals", "retries_left", "expected"),
    [((), 3, 0), ((10,), 3, 10), ((1, 5, 30), 3, 1), ((1, 5, 30), 2, 5), ((1, 5, 30), 1, 30), ((1, 5), 1, 5)],
)
def test_retry_intervals_follow_rq(intervals: tuple[int, ...], retries_left: int, expected: int) -> None:
    options = JobOptions(1, 1, 1, retries_left, intervals)
    assert retry_interval_s(options) == expected
