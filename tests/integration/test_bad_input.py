"""Hostile input written straight into Redis (not through RQ's API), fuzzed against one live daemon.

Hypothesis writes job hashes and queue entries by hand: garbage bytes, wrong shapes and types, missing
fields, invalid UTF-8, 10 MB arguments, deep nesting, unknown and non-allowlisted functions (with
arguments that would leave a marker file), pickles (some that run `os.system` when loaded) while JSON is
configured, and queue entries naming ids that have no job hash or are not RQ job ids at all. One daemon
serves the whole run. For every case:

- the job ends in a known place within seconds: the failed registry with a reason naming the problem
  (or finished, when the input was valid after all); a queue entry naming no job hash of ours is
  dropped (gone from the queue, counted by the daemon, any foreign key at its name left untouched);
- the daemon process is still alive and runs a good job enqueued right after the bad one;
- nothing outside the allowlist was imported (the canary module) or run (the marker file).

`ASCHED_FUZZ_EXAMPLES=10000` makes a soak run (default 150). Counts per input kind go to
`tests/results/bad_input.json` (`bad_input_soak.json` for a soak run) and are printed as a table
at the end of the run.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pickle
import random
import re
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from adaptive_scheduler.redis_server import RedisServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rq.job import Job
from rq.serializers import JSONSerializer

from tests.helpers import ROOT, DaemonProcess, queue, wait_until

EXAMPLES = int(os.environ.get("ASCHED_FUZZ_EXAMPLES", "150"))
SETTLE_S = 5.0  # "within a few seconds"
RESULTS_DIR = ROOT / "tests" / "results"
SOAK = 10_000  # a run this long writes bad_input_soak.json (kept), shorter ones bad_input.json
MB = 1024 * 1024
NOT_THERE = object()
# Foreign code would create this file; the strategies need its path before any fixture exists.
MARKER = Path(os.environ.get("TMPDIR", "/tmp")) / f"asched-fuzz-marker-{os.getpid()}"

# --- what a failure reason must say, per kind of problem ------------------------------------------
PAYLOAD = (
    r"job has no payload|payload is not valid JSON|payload is not RQ's|payload names no function"
    r"|payload is pickle but the daemon accepts JSON|payload is \d+ bytes, above the limit"
    r"|payload expands past the limit|instance methods are not supported|args must be a list"
    r"|is not allowed \(allowed: functions of |defines no function|nests deeper than"
)
OPTION = r"malformed RQ option|RQ option '\w+' is not supported|checkpoint|exceeded its timeout"
RAISED = r"TypeError|RuntimeError|ValueError|OverflowError"  # an allowlisted task called with odd args
CLEAR = f"{PAYLOAD}|{OPTION}|{RAISED}"
RQ_ID = re.compile(rb"[A-Za-z0-9_-]+")  # rq.job.JOB_ID_PATTERN
ALLOWED = (
    "tests.fixtures.jobs.noop",
    "tests.fixtures.jobs.add",
    "tests.fixtures.jobs.echo",
    "tests.fixtures.jobs.fail",
)


@dataclass
class Case:
    """One hostile job or queue entry, and where it may end."""

    kind: str
    queue: int = 1
    fields: dict[str, bytes] | None = None  # the job hash; None: no hash at all
    foreign: tuple[str, Any] | None = None  # instead of a hash, another type of key at rq:job:<id>
    id_prefix: bytes = b"fz-"  # a unique token follows, unless `fixed_id`
    fixed_id: bool = False
    ends: frozenset[str] = frozenset({"failed"})
    reason: str = CLEAR  # regex the failure reason must match when it failed
    result: Any = NOT_THERE  # the return value, when it must finish with one


@dataclass
class Tally:
    """What one input kind did across the run."""

    tried: int = 0
    ends: Counter[str] = field(default_factory=Counter)
    lost: int = 0
    foreign_code_run: int = 0


# --- building payloads ----------------------------------------------------------------------------


def rq_payload(
    func: Any, instance: Any = None, args: Any = (), kwargs: Any = None, compress: bool = True
) -> bytes:
    raw = json.dumps([func, instance, list(args) if isinstance(args, tuple) else args, kwargs or {}]).encode()
    return zlib.compress(raw) if compress else raw


def _rq_template() -> dict[str, bytes]:
    """The fields RQ's `Job.to_dict()` writes for a queued job (no connection is opened)."""
    job = Job.create(
        "tests.fixtures.jobs.noop", connection=redis.Redis(), serializer=JSONSerializer, origin="p1"
    )
    fields = {
        k: v if isinstance(v, bytes) else str(getattr(v, "value", v)).encode()
        for k, v in job.to_dict().items()
    }
    return fields | {"status": b"queued", "enqueued_at": fields["created_at"], "timeout": b"180"}


RQ_TEMPLATE = _rq_template()


def rq_hash(data: bytes) -> dict[str, bytes]:
    """A job hash as RQ writes it, with `data` as its payload."""
    return RQ_TEMPLATE | {"data": data}


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
funcs = st.sampled_from(ALLOWED)
compress = st.booleans()
queues = st.integers(0, 3)


def a_valid_call(value: Any) -> bool:
    """RQ's [func, instance, args, kwargs] naming an allowlisted task (it may still raise when called)."""
    return (
        isinstance(value, list)
        and len(value) == 4
        and value[0] in ALLOWED
        and value[1] is None
        and isinstance(value[2], list)
        and isinstance(value[3], dict)
    )


@st.composite
def garbage_data(draw: st.DrawFn) -> Case:
    size = draw(st.sampled_from([0] * 26 + [MB, 10 * MB, 10 * MB, 65 * MB]))
    if size:
        data = random.Random(draw(st.integers(0, 2**32))).randbytes(size)
    else:
        data = draw(st.binary(max_size=3000))
    if draw(compress) and size < 65 * MB:
        data = zlib.compress(data)
    return Case("garbage bytes as payload", draw(queues), rq_hash(data), reason=PAYLOAD)


@st.composite
def wrong_shape(draw: st.DrawFn) -> Case:
    if draw(st.booleans()):
        value = draw(json_values)
    else:
        func = draw(funcs | json_values)
        value = [func, draw(st.none() | json_values), draw(st.lists(json_values, max_size=3) | json_values)]
        value.append(draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3) | json_values))
        value = value[: draw(st.integers(0, 5))] if draw(st.integers(0, 4)) == 0 else value
    data = zlib.compress(json.dumps(value).encode()) if draw(compress) else json.dumps(value).encode()
    if a_valid_call(value):
        return Case(
            "wrong shape or types in payload",
            draw(queues),
            rq_hash(data),
            ends=frozenset({"finished", "failed"}),
            reason=RAISED,
        )
    return Case("wrong shape or types in payload", draw(queues), rq_hash(data), reason=PAYLOAD)


NUMBERS = st.sampled_from(
    [
        b"nan",
        b"-nan",
        b"inf",
        b"-inf",
        b"1e400",
        b"-1",
        b"-2",
        b"0",
        b"1",
        b"2",
        b"0.5",
        b"1e-9",
        b"5_0",
        b"0x10",
        b" 7 ",
        b"9" * 30,
        b"-" + b"9" * 30,
        b"9" * 5000,
        b"1.5",
        b"true",
        b"null",
    ]
)
GARBAGE = (
    NUMBERS
    | st.binary(max_size=40)
    | st.text(max_size=40).map(str.encode)
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.sampled_from(
        [
            b"\xff\xfe",
            b"[1, 5, 30]",
            b"[NaN]",
            b"[1e300]",
            b"[-3]",
            b'{"a": 1}',
            b"[[1]]",
            b'["a"]',
            b'{"v": 1, "state": 1}',
            b'{"v": 2, "state": 1}',
            b'{"deadline": 1}',
            b"[" * 5000,
        ]
    )
)
OPTION_FIELDS = (
    "timeout",
    "result_ttl",
    "failure_ttl",
    "ttl",
    "retries_left",
    "retry_intervals",
    "enqueue_at_front_on_retry",
    "meta",
    "asched_checkpoint",
    "status",
    "created_at",
    "enqueued_at",
    "origin",
    "description",
    "dependency_ids",
    "group_id",
    "started_at",
    "last_heartbeat",
    "success_callback_name",
    "failure_callback_name",
    "stopped_callback_name",
    "repeats_left",
    "rate_limit_key",
    "webhooks",
    "asched_preemptions",
)


@st.composite
def wrong_field_types(draw: st.DrawFn) -> Case:
    func = draw(st.sampled_from(["tests.fixtures.jobs.noop", "tests.fixtures.jobs.fail"]))
    fields = rq_hash(rq_payload(func))
    names = draw(st.lists(st.sampled_from(OPTION_FIELDS), min_size=1, max_size=4, unique=True))
    for name in names:
        fields[name] = draw(GARBAGE)
    if "retries_left" in names and _int_or_none(fields["retries_left"]) not in (None, 0, 1, 2):
        fields["retries_left"] = draw(st.sampled_from([b"0", b"1", b"2", b"-1", b"x"]))  # not 10**30 runs
    ends = {"finished", "failed", "scheduled"}
    if _int_or_none(fields.get("result_ttl", b"")) == 0:
        ends.add("deleted")  # RQ's result_ttl=0: the job is deleted once it finished
    return Case(
        "wrong field types or values",
        draw(queues),
        fields,
        ends=frozenset(ends),
        reason=f"{OPTION}|RuntimeError",
    )


def _int_or_none(value: bytes) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None


@st.composite
def missing_fields(draw: st.DrawFn) -> Case:
    func = draw(st.sampled_from(["tests.fixtures.jobs.noop", "tests.fixtures.jobs.add"]))
    args = [1, 2] if func.endswith("add") else []
    fields = rq_hash(rq_payload(func, args=args))
    for name in draw(st.lists(st.sampled_from(sorted(fields)), min_size=1, unique=True)):
        del fields[name]
    q = draw(queues)
    if not fields:
        return Case("missing fields", q, None, ends=frozenset({"dropped"}))
    if "data" not in fields:
        return Case("missing fields", q, fields, reason="job has no payload")
    return Case("missing fields", q, fields, ends=frozenset({"finished"}), result=3 if args else None)


SURROGATE = b"\xed\xa0\x80"  # U+D800 encoded as if it were a character


@st.composite
def invalid_utf8(draw: st.DrawFn) -> Case:
    bad = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xf8\x88\x80\x80\x80", b"\x80abc", SURROGATE]))
    where = draw(st.sampled_from(["arg", "func", "kwarg", "field"]))
    q = draw(queues)
    if where == "field":
        fields = rq_hash(rq_payload("tests.fixtures.jobs.noop"))
        fields[draw(st.sampled_from(OPTION_FIELDS))] = b"1" + bad
        return Case("invalid UTF-8", q, fields, ends=frozenset({"finished", "failed"}), reason=OPTION)
    texts = {
        "arg": b'["tests.fixtures.jobs.echo", null, ["' + bad + b'"], {}]',
        "func": b'["tests.fixtures.jobs.' + bad + b'", null, [], {}]',
        "kwarg": b'["tests.fixtures.jobs.echo", null, [], {"' + bad + b'": 1}]',
    }
    data = zlib.compress(texts[where]) if draw(compress) else texts[where]
    if bad == SURROGATE:  # json.loads decodes bytes with "surrogatepass": a lone surrogate, not an error
        ends = frozenset({"finished", "failed"})
        return Case("invalid UTF-8", q, rq_hash(data), ends=ends, reason=f"{PAYLOAD}|{RAISED}")
    return Case("invalid UTF-8", q, rq_hash(data), reason="payload is not valid JSON")


@st.composite
def huge_argument(draw: st.DrawFn) -> Case:
    size = draw(st.sampled_from([10 * MB, 10 * MB, MB]))
    shape = draw(st.sampled_from(["str", "list", "big int"]))  # deep ones: deep_nesting
    func = draw(funcs)
    if shape == "str":
        arg: Any = "x" * size
    elif shape == "list":
        arg = list(range(size // 8))  # about `size` bytes of JSON
    elif shape == "big int":  # past Python's 4,300-digit limit for int(str)
        digits = b"9" * draw(st.sampled_from([4301, 5000, 100_000]))
        data = b'["' + func.encode() + b'", null, [' + digits + b"], {}]"
        return Case("huge argument", draw(queues), rq_hash(zlib.compress(data)), reason=PAYLOAD)
    case = Case("huge argument", draw(queues), rq_hash(rq_payload(func, args=[arg], compress=draw(compress))))
    if func == "tests.fixtures.jobs.echo":
        case.ends, case.result = frozenset({"finished"}), arg
    else:
        case.reason = RAISED
    return case


@st.composite
def deep_nesting(draw: st.DrawFn) -> Case:
    depth = draw(st.sampled_from([100, 101, 500, 900, 990, 999, 1000, 5000, 100_000]))
    where = draw(st.sampled_from(["payload", "args", "kwargs", "checkpoint", "meta", "retry_intervals"]))
    q = draw(queues)
    if where in ("checkpoint", "meta", "retry_intervals"):
        fields = rq_hash(rq_payload("tests.fixtures.jobs.noop"))
        text = b"[" * depth + b"]" * depth
        name = {"checkpoint": "asched_checkpoint"}.get(where, where)
        fields[name] = b'{"v": 1, "state": ' + text + b"}" if where == "checkpoint" else text
        return Case("deep nesting", q, fields, ends=frozenset({"finished", "failed"}), reason=OPTION)
    inner = b"[" * depth + b"]" * depth
    if where == "payload":
        raw = inner
    elif where == "args":
        raw = b'["tests.fixtures.jobs.echo", null, [' + inner + b"], {}]"
    else:
        raw = b'["tests.fixtures.jobs.echo", null, [], {"value": ' + inner + b"}]"
    ends = frozenset({"failed"}) if depth > 100 else frozenset({"finished"})
    result = NOT_THERE if depth > 100 or where == "payload" else nested(depth - 1, [])
    if where == "payload":
        ends = frozenset({"failed"})
    return Case("deep nesting", q, rq_hash(zlib.compress(raw)), ends=ends, reason=PAYLOAD, result=result)


@st.composite
def unknown_function(draw: st.DrawFn) -> Case:
    name = draw(
        st.text(max_size=40)
        | st.sampled_from(
            [
                "tests.fixtures.jobs.nope",
                "tests.fixtures.jobs",
                "tests.fixtures.jobs.add.__globals__",
                "tests.fixtures.jobs.os.system",
                "adaptive_scheduler.tasks.registry.task",
                "adaptive_scheduler.tasks.sdk.context",
                "add",
                "tests.fixtures.jobs.add ",
                " tests.fixtures.jobs.add",
                "tasks..builtin.add",
                ".",
                "..",
                "tests.fixtures.jobs.ADD",
                "tests.fixtures.jobs.\u0430dd",
            ]
        )
        | st.builds(
            lambda a, b: f"{a}.{b}",
            st.from_regex(r"[a-z_]{1,12}", fullmatch=True),
            st.from_regex(r"[a-z_]{1,12}", fullmatch=True),
        )
    )
    if name in ALLOWED:
        name += "_"
    data = rq_payload(name, args=draw(st.lists(json_values, max_size=2)), compress=draw(compress))
    reason = r"is not allowed \(allowed: |defines no function|payload names no function"
    return Case("unknown function", draw(queues), rq_hash(data), reason=reason)


def foreign_calls(marker: str) -> list[tuple[str, list[Any]]]:
    """Calls that would leave `marker` (or worse) if the daemon ever ran them."""
    return [
        ("os.system", [f"touch {marker}"]),
        ("builtins.eval", [f"open({marker!r}, 'w')"]),
        ("builtins.exec", [f"open({marker!r}, 'w')"]),
        ("builtins.__import__", ["tests.fixtures.canary"]),
        ("subprocess.call", [["touch", marker]]),
        ("subprocess.run", [["touch", marker]]),
        ("subprocess.Popen", [["touch", marker]]),
        ("os.popen", [f"touch {marker}"]),
        ("posix.system", [f"touch {marker}"]),
        ("pathlib.Path.touch", [marker]),
        ("importlib.import_module", ["tests.fixtures.canary"]),
        ("tests.fixtures.canary.run", []),
        ("shutil.rmtree", ["/tmp/asched-fuzz-nothing-here"]),
        ("pty.spawn", [["touch", marker]]),
        ("tests.fixtures.jobs.os.system", [f"touch {marker}"]),
        ("tests.fixtures.jobs.add.__globals__", []),
        ("tests.fixtures.jobs.ctypes.string_at", [0]),
    ]


def not_allowlisted(marker: str) -> st.SearchStrategy[Case]:
    @st.composite
    def build(draw: st.DrawFn) -> Case:
        func, args = draw(st.sampled_from(foreign_calls(marker)))
        extra = draw(st.lists(json_values, max_size=2))  # and whatever else a hostile producer adds
        data = rq_payload(func, args=[*args, *extra], compress=draw(compress))
        reason = rf"task '{re.escape(func)}' is not allowed \(allowed: functions of "
        return Case("non-allowlisted function", draw(queues), rq_hash(data), reason=reason)

    return build()


class _Touch:
    """Unpickling this runs os.system: it must never be unpickled while JSON is configured."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def pickle_payload(marker: str) -> st.SearchStrategy[Case]:
    @st.composite
    def build(draw: st.DrawFn) -> Case:
        protocol = draw(st.integers(0, pickle.HIGHEST_PROTOCOL))
        evil = draw(st.booleans())
        args = (1, 2, *draw(st.lists(json_values, max_size=2)))
        call = ("tests.fixtures.jobs.add", _Touch(marker) if evil else None, args, {})
        raw = pickle.dumps(call, protocol)
        data = zlib.compress(raw) if draw(compress) else raw
        reason = (
            "payload is pickle but the daemon accepts JSON" if protocol >= 2 else "payload is not valid JSON"
        )
        return Case("pickle payload (JSON configured)", draw(queues), rq_hash(data), reason=reason)

    return build()


@st.composite
def queue_entry_without_hash(draw: st.DrawFn) -> Case:
    prefix = draw(st.sampled_from([b"fz-", b"fz-" + b"a" * 100_000 + b"-", b"00000000-"]))
    prefix += draw(st.from_regex(rb"[A-Za-z0-9_-]{0,40}", fullmatch=True))  # any RQ-shaped id
    return Case("queue entry, no job hash", draw(queues), None, id_prefix=prefix, ends=frozenset({"dropped"}))


@st.composite
def queue_entry_not_ours(draw: st.DrawFn) -> Case:
    q = draw(queues)
    kind = "queue entry, id not ours"
    if draw(st.booleans()):  # an RQ-shaped id whose key is another application's, not a job hash
        value = draw(
            st.sampled_from(["string", "list", "set", "zset", "stream"]).map(lambda t: (t, b"someone else's"))
        )
        return Case(kind, q, None, foreign=value, ends=frozenset({"dropped"}))
    prefix = draw(
        st.sampled_from(
            [b"\xff\xfe", b"a:b:", b"has space ", b"dot.", b"\x00", b"\xc3\x28", b"rq:job:", b"*", b"\n"]
        )
        | st.binary(min_size=1, max_size=20).filter(lambda b: re.fullmatch(rb"[A-Za-z0-9_-]+", b) is None)
    )
    with_hash = draw(st.booleans())
    fields = rq_hash(rq_payload("tests.fixtures.jobs.noop")) if with_hash else None
    if draw(st.integers(0, 9)) == 0:
        return Case(kind, q, fields, id_prefix=b"", fixed_id=True, ends=frozenset({"dropped"}))
    return Case(kind, q, fields, id_prefix=prefix, ends=frozenset({"dropped"}))


# --- the harness: one daemon for the whole run ----------------------------------------------------


class Harness:
    """One daemon, its Redis, the marker files, and the tally per input kind."""

    def __init__(self, server: RedisServer, directory: Path) -> None:
        self.url = server.url
        self.client = redis.Redis.from_url(self.url)
        self.marker = MARKER
        self.marker.unlink(missing_ok=True)
        self.canary = directory / "canary-imported"
        self.tally: dict[str, Tally] = {}
        self.dropped = 0
        self.restarts: list[str] = []
        self.started_at = time.monotonic()
        self.daemon = self._start()

    def _start(self) -> DaemonProcess:
        self.client.flushdb()
        env = {
            "ASCHED_TEST_CANARY": str(self.canary),
            "ASCHED_LOG_LEVEL": "INFO",
            "ASCHED_DEFAULT_JOB_TIMEOUT_S": "10",
            "ASCHED_LEASE_TTL_S": "2",
            # the fuzz calls allowlisted tasks with bad arguments on purpose: keep their circuit breakers
            # closed, so every case shows what the input itself does
            "ASCHED_BREAKER_FAILURES": str(10**9),
            "ASCHED_BREAKER_WINDOW_S": "0.001",
        }
        return DaemonProcess(self.url, env=env).wait_ready()

    def alive(self) -> bool:
        return self.daemon.process.poll() is None

    def restart_after_crash(self) -> str:
        """The dead daemon's log tail; a new daemon takes over (so later examples still mean something)."""
        tail = "\n".join(self.daemon.output().splitlines()[-40:])
        self.restarts.append(tail)
        self.daemon.kill()
        self.daemon.log.close()
        self.dropped = 0
        self.daemon = self._start()
        return tail

    def foreign_code_ran(self) -> bool:
        return self.marker.exists() or self.canary.exists()

    def stop(self) -> int:
        code = self.daemon.stop()
        self.daemon.log.close()
        self.client.close()
        return code


@pytest.fixture(scope="module")
def harness(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Harness]:
    h = Harness(redis_server, tmp_path_factory.mktemp("bad-input"))
    try:
        yield h
    finally:
        log = h.daemon.output()
        code = h.stop()
        _report(h, request, time.monotonic() - h.started_at)
        h.client = redis.Redis.from_url(h.url)
        h.client.flushdb()
        h.client.close()
        assert code == 0, log[-3000:]


def _report(h: Harness, request: pytest.FixtureRequest, elapsed_s: float) -> None:
    rows = {
        kind: {
            "tried": t.tried,
            **{end: t.ends.get(end, 0) for end in ("failed", "finished", "dropped", "scheduled", "deleted")},
            "jobs_lost": t.lost,
            "foreign_code_run": t.foreign_code_run,
        }
        for kind, t in sorted(h.tally.items())
    }
    document = {
        "examples": EXAMPLES,
        "seconds": round(elapsed_s, 1),
        "daemon_restarts": len(h.restarts),
        "daemon_dropped_count": h.dropped,
        "kinds": rows,
    }
    results = RESULTS_DIR / ("bad_input_soak.json" if EXAMPLES >= SOAK else "bad_input.json")
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(document, indent=2) + "\n")
    header = (
        f"{'fault or input':<36} {'tried':>6} {'failed':>6} {'finished':>8} {'dropped':>7} {'lost':>4} "
        f"{'foreign code run':>16}"
    )
    lines = [
        f"bad input fuzz: {EXAMPLES} examples, {elapsed_s:.0f} s, daemon restarts {len(h.restarts)}",
        header,
    ]
    for kind, row in rows.items():
        lines.append(
            f"{kind:<36} {row['tried']:>6} {row['failed']:>6} {row['finished']:>8} {row['dropped']:>7} "
            f"{row['jobs_lost']:>4} {row['foreign_code_run']:>16}"
        )
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print("\n" + "\n".join(lines) + f"\n(written to {results.relative_to(ROOT)})")


# --- reading where a job ended --------------------------------------------------------------------


def place(client: redis.Redis, q: int, job_id: bytes) -> str:
    """queued, started, failed, finished, scheduled, canceled; else dropped (no job hash of ours at
    its name) or nowhere (a job hash in no queue and no registry: a lost job)."""
    name = f"p{q}"
    with client.pipeline(transaction=True) as pipe:
        pipe.lpos(f"rq:queue:{name}", job_id)
        pipe.zrange(f"rq:wip:{name}", 0, -1)
        for registry in ("failed", "finished", "scheduled", "canceled"):
            pipe.zscore(f"rq:{registry}:{name}", job_id)
        pipe.type(b"rq:job:" + job_id)
        queued, wip, failed, finished, scheduled, canceled, kind = pipe.execute()
    if queued is not None:
        return "queued"
    if any(member.startswith(job_id + b":") for member in wip):
        return "started"
    for end, score in (
        ("failed", failed),
        ("finished", finished),
        ("scheduled", scheduled),
        ("canceled", canceled),
    ):
        if score is not None:
            return end
    return "nowhere" if kind == b"hash" else "gone"


def failure_reason(client: redis.Redis, job_id: bytes) -> str:
    raw = client.hget(b"rq:job:" + job_id, "exc_info") or b""
    try:
        return zlib.decompress(raw).decode("utf-8", "replace")
    except zlib.error:
        return raw.decode("utf-8", "replace")


def return_value(client: redis.Redis, job_id: bytes) -> Any:
    entries = client.xrevrange(b"rq:results:" + job_id, count=1)
    assert entries, "a finished job has a result entry"
    return json.loads(base64.b64decode(entries[0][1][b"return_value"]))


def write(client: redis.Redis, case: Case, job_id: bytes) -> bytes | None:
    """Write the case straight into Redis; returns the DUMP of whatever is at rq:job:<id> (or None)."""
    key = b"rq:job:" + job_id
    with client.pipeline(transaction=True) as pipe:
        pipe.delete(key, b"rq:results:" + job_id)
        if case.fields:
            pipe.hset(key, mapping=case.fields)  # type: ignore[arg-type]
        if case.foreign is not None:
            kind, value = case.foreign
            {
                "string": lambda: pipe.set(key, value),
                "list": lambda: pipe.rpush(key, value),
                "set": lambda: pipe.sadd(key, value),
                "zset": lambda: pipe.zadd(key, {value: 1}),
                "stream": lambda: pipe.xadd(key, {b"v": value}),
            }[kind]()
        pipe.dump(key)
        pipe.rpush(f"rq:queue:p{case.queue}", job_id)
        return pipe.execute()[-2]  # type: ignore[no-any-return]


def clean(client: redis.Redis, q: int, *job_ids: bytes) -> None:
    """Remove a case's traces so a 10,000-example run does not fill Redis with 10 MB payloads."""
    name = f"p{q}"
    with client.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.delete(b"rq:job:" + job_id, b"rq:results:" + job_id)
            for registry in ("failed", "finished", "scheduled", "canceled"):
                pipe.zrem(f"rq:{registry}:{name}", job_id)
        pipe.execute()


def cases(marker: str) -> st.SearchStrategy[Case]:
    return st.one_of(
        garbage_data(),
        wrong_shape(),
        wrong_field_types(),
        missing_fields(),
        invalid_utf8(),
        huge_argument(),
        deep_nesting(),
        unknown_function(),
        not_allowlisted(marker),
        pickle_payload(marker),
        queue_entry_without_hash(),
        queue_entry_not_ours(),
    )


@pytest.mark.timeout(60 if EXAMPLES <= 150 else int(EXAMPLES * 0.6))
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    print_blob=True,
)
@given(case=cases(str(MARKER)))
def test_hostile_input_ends_in_a_known_place_and_the_daemon_keeps_serving(
    harness: Harness, case: Case
) -> None:
    client = harness.client
    if not harness.alive():  # an earlier example killed it: that example failed; start afresh
        harness.restart_after_crash()
    tally = harness.tally.setdefault(case.kind, Tally())
    tally.tried += 1
    job_id = case.id_prefix if case.fixed_id else case.id_prefix + uuid.uuid4().hex.encode()
    # Given a hostile job (or queue entry) written straight into Redis, and a good job right behind it
    before = write(client, case, job_id)
    good = queue(client, case.queue).enqueue("tests.fixtures.jobs.add", 20, 22)
    good_id = good.id.encode()
    # When the daemon gets to them, then the hostile one ends in a known place within seconds
    try:
        wait_until(
            lambda: not harness.alive() or place(client, case.queue, job_id) not in ("queued", "started"),
            timeout_s=SETTLE_S,
        )
        assert harness.alive(), f"the daemon died on {case.kind}:\n{harness.restart_after_crash()}"
        end = place(client, case.queue, job_id)
        not_ours = case.foreign is not None or not RQ_ID.fullmatch(job_id)
        if end == "gone" or (end == "nowhere" and not_ours):
            end = "deleted" if "deleted" in case.ends else "dropped"
        tally.ends[end] += 1
        if end not in case.ends or end == "nowhere":
            tally.lost += 1
        assert end in case.ends, f"{case.kind}: ended {end!r}, expected one of {sorted(case.ends)}"
        if end == "failed":
            reason = failure_reason(client, job_id)
            assert re.search(case.reason, reason), f"{case.kind}: unclear reason {reason[-500:]!r}"
        if end == "finished" and case.result is not NOT_THERE:
            assert return_value(client, job_id) == case.result
        if end == "dropped" and not_ours:
            assert client.dump(b"rq:job:" + job_id) == before, "a key that is not ours was changed"
            assert job_id in client.lrange("asched:foreign", -20, -1), "the entry is kept, not lost"
        # and the daemon is alive and runs the good job enqueued behind it
        wait_until(lambda: place(client, case.queue, good_id) == "finished", timeout_s=SETTLE_S)
        assert return_value(client, good_id) == 42
        assert harness.alive()
    finally:
        if harness.foreign_code_ran():
            tally.foreign_code_run += 1
        clean(client, case.queue, job_id, good_id)
    # and nothing outside the allowlist was imported or run
    assert not harness.foreign_code_ran(), f"{case.kind}: foreign code ran (marker or canary present)"
    if end == "dropped":
        harness.dropped += 1


def test_the_daemon_counted_each_dropped_entry_and_ran_no_foreign_code(harness: Harness) -> None:
    """Runs after the fuzz (same daemon): its own `dropped` counter matches what the fuzz saw."""

    def counted() -> int:
        raw = [harness.client.get(k) for k in harness.client.scan_iter(match="asched:status:*")]
        return sum(json.loads(v)["counts"]["dropped"] for v in raw if v)

    wait_until(lambda: counted() == harness.dropped, timeout_s=5)
    assert not harness.restarts, "the daemon died during the fuzz run:\n" + "\n---\n".join(harness.restarts)
    assert not harness.foreign_code_ran()
    assert harness.alive()
