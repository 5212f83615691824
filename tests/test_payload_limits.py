"""The payload and option checks the bad-input fuzz (tests/integration/test_bad_input.py) led to (pure).

Each of these inputs used to raise something other than `PayloadError` (RecursionError, ValueError)
in the daemon's loop, or to reach Redis as a value its scripts reject, and stop the daemon.
"""

from __future__ import annotations

import json
import zlib

import pytest
from adaptive_scheduler import checkpoint
from adaptive_scheduler.errors import PayloadError
from adaptive_scheduler.model import JobOptions
from adaptive_scheduler.payload import MAX_NESTING, decode_call, decode_options, past_deadline

DEFAULTS = JobOptions(timeout_s=180, result_ttl_s=500, failure_ttl_s=1000)


def nested(depth: int) -> object:
    value: object = []
    for _ in range(depth - 1):
        value = [value]
    return value


def call(args: list[object], kwargs: dict[str, object] | None = None) -> bytes:
    return zlib.compress(json.dumps(["tests.fixtures.jobs.echo", None, args, kwargs or {}]).encode())


def test_arguments_nested_up_to_the_limit_are_accepted() -> None:
    assert decode_call(call([nested(MAX_NESTING)]), "json", ("tests.fixtures.jobs",)).args == (
        nested(MAX_NESTING),
    )


@pytest.mark.parametrize("where", ["args", "kwargs"])
def test_an_argument_nested_past_the_limit_is_refused_by_name(where: str) -> None:
    deep = nested(MAX_NESTING + 1)
    data = call([deep]) if where == "args" else call([], {"value": deep})
    with pytest.raises(PayloadError, match=f"an argument nests deeper than {MAX_NESTING} levels"):
        decode_call(data, "json", ("tests.fixtures.jobs",))


def test_json_too_deep_for_the_decoder_is_a_payload_error() -> None:
    with pytest.raises(PayloadError, match="not valid JSON: it nests too deep to decode"):
        decode_call(b"[" * 100_000 + b"]" * 100_000, "json", ("tests.fixtures.jobs",))


def test_an_integer_past_pythons_digit_limit_is_a_payload_error() -> None:
    data = b'["tests.fixtures.jobs.add", null, [' + b"9" * 5000 + b", 1], {}]"
    with pytest.raises(PayloadError, match="not valid JSON: Exceeds the limit"):
        decode_call(data, "json", ("tests.fixtures.jobs",))


@pytest.mark.parametrize(
    "fields",
    [
        {"timeout": b"nan"},
        {"retry_intervals": b'["a"]'},
        {"retry_intervals": b"[NaN]"},
        {"retry_intervals": b"[Infinity]"},
        {"retry_intervals": b"[-1]"},
        {"retry_intervals": b"[[1]]"},
        {"retry_intervals": b"[true]"},
        {"retry_intervals": b'{"a": 1}'},
        {"retry_intervals": b"5"},
        {"retry_intervals": b"[" * 100_000},
        {"retries_left": b"\xff"},
    ],
)
def test_malformed_options_are_a_payload_error(fields: dict[str, bytes]) -> None:
    with pytest.raises(PayloadError, match="malformed RQ option"):
        decode_options(fields, DEFAULTS)


def test_a_ttl_too_large_for_redis_means_forever() -> None:
    options = decode_options({"result_ttl": b"9" * 30, "failure_ttl": b"4294967296"}, DEFAULTS)
    assert (options.result_ttl_s, options.failure_ttl_s) == (-1, -1)
    assert decode_options({"failure_ttl": b"31536000"}, DEFAULTS).failure_ttl_s == 31536000


def test_valid_retry_intervals_still_read_as_rq_writes_them() -> None:
    assert decode_options({"retry_intervals": b"[1, 5.0, 30]"}, DEFAULTS).retry_intervals == (1, 5, 30)


def test_a_checkpoint_or_meta_too_deep_to_decode_is_handled() -> None:
    with pytest.raises(checkpoint.CheckpointError, match="unreadable"):
        checkpoint.decode(b'{"v": 1, "state": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    assert past_deadline({"meta": b"[" * 100_000}, now=0.0) is False


def test_a_checkpoint_nested_past_the_limit_is_refused_by_name() -> None:
    assert checkpoint.decode(checkpoint.encode(json.dumps(nested(MAX_NESTING)))) == nested(MAX_NESTING)
    with pytest.raises(checkpoint.CheckpointError, match=f"nests deeper than {MAX_NESTING} levels"):
        checkpoint.decode(checkpoint.encode(json.dumps(nested(MAX_NESTING + 1))))
