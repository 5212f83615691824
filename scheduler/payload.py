"""Decoding a claimed job's hash into an allowlisted call and the RQ options it asks for (pure).

Every check happens here, before anything is imported or run: the payload must be in the configured
format (JSON unless the operator opted into pickle), name an allowlisted function, and use only the RQ
options the daemon honours. A violation raises `PayloadError` whose text becomes the job's failure reason.
"""

from __future__ import annotations

import json
import math
import pickle
import sys
import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from adaptive_scheduler.errors import PayloadError, TaskNotAllowed
from adaptive_scheduler.model import Call, JobOptions
from adaptive_scheduler.tasks.registry import describe_allowed, is_allowed, not_defined_there

if TYPE_CHECKING:
    from rq.serializers import DefaultSerializer, JSONSerializer

# Fields read from the job hash at claim time, in this order: the claim script always returns
# `timeout` first, then the fields it was asked for (FIELDS[1:]).
FIELDS = (
    "timeout",
    "data",
    "result_ttl",
    "failure_ttl",
    "retries_left",
    "retry_intervals",
    "enqueue_at_front_on_retry",
    "success_callback_name",
    "failure_callback_name",
    "stopped_callback_name",
    "repeats_left",
    "rate_limit_key",
    "webhooks",
    "asched_checkpoint",
    "meta",
    "enqueued_at",
    "asched_memory_stops",
)
UNSUPPORTED = {
    "success_callback_name": "on_success",
    "failure_callback_name": "on_failure",
    "stopped_callback_name": "on_stopped",
    "repeats_left": "repeat",
    "rate_limit_key": "rate_limit",
    "webhooks": "webhooks",
}
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024
# An argument nested deeper than this is refused: Python's JSON decoder, pickle (the daemon pickles the
# call to hand it to a slot) and the slot's result encoder all recurse, and fail near 1,000 levels.
MAX_NESTING = 100
CONTAINERS = (list, tuple, dict)
# A ttl above this (about 68 years) means "forever": larger values overflow Redis' EXPIRE.
MAX_TTL_S = 2**31 - 1
_JSON = json.JSONDecoder()
# (func_path, allowed_modules) pairs already found allowed, and defined where their path says: the check
# runs for every job, and a busy daemon sees the same few functions again and again. Bounded, since
# any identifier in an allowed module passes.
_ALLOWED: set[tuple[str, tuple[str, ...]]] = set()
_ALLOWED_MAX = 1024


def rq_serializer(name: str) -> type[JSONSerializer] | type[DefaultSerializer]:
    """RQ's serializer for the `serializer` setting ("json" or "pickle"): what our own producers (the CLI,
    periodic jobs, the demo) write and what `job` reads back, so their jobs are in the format the
    daemon accepts."""
    from rq.serializers import DefaultSerializer, JSONSerializer  # pickle: rq's default serializer

    return DefaultSerializer if name == "pickle" else JSONSerializer


def decode_call(data: bytes | None, serializer: str, allowed_modules: tuple[str, ...]) -> Call:
    """The function call a job's `data` field describes.

    Raises:
        PayloadError: the payload is missing, malformed or in the wrong format.
        TaskNotAllowed: it names a function outside the allowlist.
    """
    if not data:
        raise PayloadError("job has no payload (its 'data' field is missing or empty)")
    raw = _decompress(data)
    parts = _loads_pickle(raw) if serializer == "pickle" else _loads_json(raw)
    if not isinstance(parts, list | tuple) or len(parts) != 4:
        raise PayloadError("payload is not RQ's [func_name, instance, args, kwargs]")
    func_path, instance, args, kwargs = parts
    if not isinstance(func_path, str) or not func_path:
        raise PayloadError(f"payload names no function (func_name is {func_path!r})")
    if instance is not None:
        raise PayloadError(f"task {func_path!r}: instance methods are not supported; enqueue a function")
    if (func_path, allowed_modules) not in _ALLOWED:
        _check_allowed(func_path, allowed_modules)
    if not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
        raise PayloadError(f"task {func_path!r}: args must be a list and kwargs an object")
    shallow = serializer != "pickle" and raw.count(b"[") + raw.count(b"{") <= MAX_NESTING  # fast path
    if not shallow and nests_deeper([*args, *kwargs.values()], MAX_NESTING):
        raise PayloadError(f"task {func_path!r}: an argument nests deeper than {MAX_NESTING} levels")
    return Call(func_path, tuple(args), kwargs)


def _check_allowed(func_path: str, allowed_modules: tuple[str, ...]) -> None:
    """Raises TaskNotAllowed unless `func_path` is allowlisted and defined where its path says."""
    if not is_allowed(func_path, allowed_modules):
        allowed = describe_allowed(allowed_modules)
        raise TaskNotAllowed(f"task {func_path!r} is not allowed (allowed: {allowed})")
    if (why := not_defined_there(func_path)) is not None:
        raise TaskNotAllowed(f"task {func_path!r} is not allowed: {why}")
    # remembered only once the module is imported: before that, where the function is from is unknown
    if len(_ALLOWED) < _ALLOWED_MAX and func_path.rpartition(".")[0] in sys.modules:
        _ALLOWED.add((func_path, allowed_modules))


def decode_options(fields: Mapping[str, bytes | None], defaults: JobOptions) -> JobOptions:
    """The RQ options of a job, defaults filled in.

    Raises:
        PayloadError: an option is malformed or one the daemon does not support.
    """
    for name, option in UNSUPPORTED.items():
        if fields.get(name):
            raise PayloadError(f"RQ option {option!r} is not supported by adaptive-scheduler")
    try:
        return JobOptions(
            timeout_s=_timeout(fields.get("timeout"), defaults.timeout_s),
            result_ttl_s=_ttl(fields.get("result_ttl"), defaults.result_ttl_s),
            failure_ttl_s=_ttl(fields.get("failure_ttl"), defaults.failure_ttl_s),
            retries_left=_int(fields.get("retries_left"), 0),
            retry_intervals=_intervals(fields.get("retry_intervals")),
            retry_at_front=fields.get("enqueue_at_front_on_retry") == b"1",
        )
    except (ValueError, TypeError, RecursionError) as exc:
        raise PayloadError(f"malformed RQ option: {exc}") from None


def past_deadline(fields: Mapping[str, bytes | None], now: float) -> bool:
    """True when the producer set `meta={"deadline": <unix s>}` and that time has passed.

    Only JSON meta is read (a malformed or pickled meta has no deadline): this is a shedding hint,
    never a reason to fail a job.
    """
    raw = fields.get("meta")
    if not raw:
        return False
    try:
        deadline = json.loads(raw).get("deadline")
    except (ValueError, AttributeError, RecursionError):
        return False
    return isinstance(deadline, int | float) and deadline < now


def retry_interval_s(options: JobOptions) -> int:
    """RQ's rule: the interval for the next retry, the last one repeating."""
    if not options.retry_intervals:
        return 0
    done = max(0, len(options.retry_intervals) - options.retries_left)
    return int(options.retry_intervals[min(done, len(options.retry_intervals) - 1)])


def _decompress(data: bytes) -> bytes:
    if len(data) > MAX_PAYLOAD_BYTES:
        raise PayloadError(f"payload is {len(data)} bytes, above the limit of {MAX_PAYLOAD_BYTES}")
    try:
        raw = zlib.decompressobj().decompress(data, MAX_PAYLOAD_BYTES + 1)
    except zlib.error:
        return data  # RQ falls back to an uncompressed payload too
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise PayloadError(f"payload expands past the limit of {MAX_PAYLOAD_BYTES} bytes")
    return raw


def _loads_json(raw: bytes) -> Any:
    if raw[:1] == b"[":  # RQ's JSONSerializer: UTF-8 text of a list; skips json.loads' encoding sniffing
        try:
            return _JSON.decode(raw.decode())
        except (ValueError, RecursionError):
            pass  # the general path below gives the reason
    if raw[:1] == b"\x80":
        raise PayloadError(
            "payload is pickle but the daemon accepts JSON: enqueue with "
            "serializer=rq.serializers.JSONSerializer (or set serializer='pickle' for trusted producers)"
        )
    try:
        return json.loads(raw)
    except ValueError as exc:  # also UnicodeDecodeError, and an integer past Python's 4,300 digits
        raise PayloadError(f"payload is not valid JSON: {exc}") from None
    except RecursionError:
        raise PayloadError("payload is not valid JSON: it nests too deep to decode") from None


def _loads_pickle(raw: bytes) -> Any:
    try:
        return pickle.loads(raw)
    except Exception as exc:  # any error unpickling is a bad payload
        raise PayloadError(f"payload is not a valid pickle: {exc!r}") from None


def _timeout(value: bytes | None, default: float) -> float:
    if not value:
        return default
    seconds = float(value)
    if math.isnan(seconds):
        raise ValueError(f"timeout {value!r} is not a number of seconds")
    return float("inf") if seconds < 0 else seconds


def _int(value: bytes | None, default: int) -> int:
    return int(value) if value else default


def _ttl(value: bytes | None, default: int) -> int:
    """RQ's ttl: -1 (or any negative) keeps forever, 0 deletes at once; past MAX_TTL_S is forever too."""
    seconds = _int(value, default)
    return -1 if seconds > MAX_TTL_S else seconds


def _intervals(value: bytes | None) -> tuple[int, ...]:
    if not value:
        return ()
    intervals = json.loads(value)
    if not isinstance(intervals, list) or not all(
        isinstance(i, int | float) and not isinstance(i, bool) and 0 <= i < math.inf for i in intervals
    ):
        raise ValueError(f"retry_intervals must be a list of seconds, got {value[:100]!r}")  # type: ignore[index]
    return tuple(int(i) for i in intervals)


def nests_deeper(values: list[Any], limit: int) -> bool:
    """Whether any list or object in `values` holds containers more than `limit` levels deep."""
    stack = [(value, 1) for value in values if isinstance(value, CONTAINERS)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        for child in value.values() if isinstance(value, dict) else value:
            if isinstance(child, CONTAINERS):
                stack.append((child, depth + 1))
    return False
