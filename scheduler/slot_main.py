"""The code a slot process runs: receive a call, run it, send back its outcome. Nothing else.

It runs in a process forked from the daemon and touches nothing of the daemon's: no logging, none of
its Redis connections. A job that calls `rq.get_current_job()` gets an `rq.job.Job` on the slot's own
client, which connects only if the job uses it (adaptive_scheduler.current_job). The daemon checked
the call against the allowlist before sending it; the slot imports only that function's module (the
daemon has usually imported it already, before forking).
The slot leads its own session (so its own process group): a job's children are stopped with it, a
terminal's Ctrl-C reaches only the daemon, which decides what happens to running jobs, and where Linux
shares CPU time between sessions first (autogroup), the slot's `nice` is its session's weight too. A
job that returns while processes it started still run has them killed before its outcome is sent (the
slot is their subreaper, so orphaned grandchildren are found too).
"""

from __future__ import annotations

import _signal
import contextlib
import ctypes
import importlib
import json
import os
import pickle
import signal
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psutil
from adaptive_scheduler.channel import Channel
from adaptive_scheduler.current_job import CurrentJob
from adaptive_scheduler.governor.heap import HeapCell, start_sampler
from adaptive_scheduler.pulse import Pulse
from adaptive_scheduler.tasks import sdk

if TYPE_CHECKING:
    from adaptive_scheduler.slots import SlotSpec

# Messages, daemon -> slot: (job_id, func_path, args, kwargs, resume_state, priority, meta), or None
# to exit; `meta` is the job hash's raw field, for rq.get_current_job(). Jobs run in the order sent:
# the daemon may send short jobs while one runs (they wait in the slot), and TAKE_BACK to have every
# job sent before it that has not started given back unrun.
# slot -> daemon: ("ready", pid) once; ("checkpoint", job_id, state JSON) any number of times during
# a job; then (job_id, kind, payload, started_at, ended_at) per job, where kind is "ok" (payload: the
# serialized return value), "error" (payload: the failure text) or "preempted" (payload: ""); and
# (GIVEN_BACK, [job_id, ...]) for each TAKE_BACK, naming the jobs it did not start (perhaps none).
Outcome = tuple[str, str, bytes | str, float, float]
TAKE_BACK = ("take back",)
GIVEN_BACK = "given back"
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def serve(conn: Channel, spec: SlotSpec, heap: HeapCell | None = None) -> None:
    """Run calls from `conn` until told to stop (or after one call when `spec.one_job`)."""
    os.setsid()
    if spec.nice:
        _lower_session_weight(spec.nice)
    _die_with_parent()
    _own_signals()  # the daemon's handlers were inherited by the fork
    dumps = _pickle_dumps if spec.serializer == "pickle" else _json_dumps
    send = conn.send
    current = CurrentJob(spec.redis_url, spec.serializer, spec.queues)

    if heap is not None:  # before "ready": the daemon takes its first reading as the base
        switch = _dead_mans_switch(spec.pulse, spec.fence_s, heap) if spec.pulse is not None else None
        start_sampler(heap, spec.heap_interval_s, switch)
    send(("ready", os.getpid()))
    inbox: deque[Any] = deque()
    while True:
        # every message sent so far is read before a job starts: a TAKE_BACK sent after a job that
        # waited here (while the job before it ran) must keep it from starting
        if not inbox:
            inbox.append(conn.receive())
        inbox.extend(conn.receive_waiting())
        message = inbox.popleft()
        if message is None:
            break
        if message == TAKE_BACK or TAKE_BACK in inbox:
            send((GIVEN_BACK, _give_back(message, inbox)))
            continue
        _running[0] = True
        outcome = run(message, dumps, send, current)
        _running[0] = False
        _end_leftovers()
        _own_signals()
        send(outcome)
        if spec.one_job:
            break
    conn.close()


_running = [False]  # a job runs in this slot (read by the sampler thread)


def _give_back(first: Any, inbox: deque[Any]) -> list[str]:
    """Remove the jobs up to the first TAKE_BACK (`first` was just taken from the inbox) and the
    TAKE_BACK itself; return their ids."""
    given = []
    message = first
    while message != TAKE_BACK:
        given.append(message[0])
        message = inbox.popleft()
    return given


def _dead_mans_switch(pulse: Pulse, fence_s: float, heap: HeapCell) -> Callable[[], None]:
    """Stop this slot's job once the daemon has been silent for `fence_s` (adaptive_scheduler.pulse)."""

    def check() -> None:
        if _running[0] and pulse.age(time.monotonic()) > fence_s:
            heap.mark_fenced()
            os.killpg(os.getpgrp(), signal.SIGKILL)  # the job, its children, and this slot

    return check


def run(
    message: tuple[str, str, tuple[Any, ...], dict[str, Any], Any, int, bytes | None],
    dumps: Callable[[Any], bytes],
    send: Callable[[tuple[Any, ...]], None],
    current: CurrentJob,
) -> Outcome:
    """Run one call; any exception becomes a failure text, like RQ's exc_info."""
    job_id, func_path, args, kwargs, resume_state, priority, meta = message
    sdk.enter(sdk.JobContext(job_id, resume_state, send))
    started_at = time.time()
    try:
        with current.running(job_id, priority, meta, (func_path, args, kwargs)):
            value = _resolve(func_path)(*args, **kwargs)
    except sdk.Preempted:
        return job_id, "preempted", "", started_at, time.time()
    except BaseException:  # the job's own failure, SystemExit and MemoryError included
        return job_id, "error", traceback.format_exc(), started_at, time.time()
    finally:
        sdk.enter(None)
    try:
        payload = dumps(value)
    except (TypeError, ValueError, RecursionError, pickle.PicklingError) as exc:
        reason = f"the return value of {func_path} cannot be serialized: {exc}"
        return job_id, "error", reason, started_at, time.time()
    return job_id, "ok", payload, started_at, time.time()


# The slot's own dispositions. A job may change them (a library installing a SIGUSR1 handler, say);
# the next job in the slot must still checkpoint when the daemon signals it.
SLOT_SIGNALS = (
    (signal.SIGINT, _signal.SIG_IGN),  # Ctrl-C reaches the daemon, which decides
    (signal.SIGTERM, _signal.SIG_DFL),
    (signal.SIGUSR1, sdk.request_preemption),
)


def _own_signals() -> None:
    """Set the slot's dispositions where they differ (a check costs ~20 ns; `signal.signal`, µs)."""
    for signum, handler in SLOT_SIGNALS:
        if _signal.getsignal(signum) != handler:
            signal.signal(signum, handler)


def _lower_session_weight(nice: int) -> None:
    """Where Linux shares CPU time between sessions first (autogroup, on in most distributions' kernels),
    a process's nice weighs only against its own session: give this slot's session the same lower
    weight, so that busy jobs yield to the daemon, Redis and the host's other work, as `slot_nice` says.
    In one session with the daemon, two busy slots weighed as much as all of a producer's session: P0
    jobs waited for a core at both ends (`bench.burst`: P0 p99 13.1 -> 5.0 ms)."""
    with contextlib.suppress(OSError), open("/proc/self/autogroup", "w") as file:
        file.write(str(nice))


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this slot when its parent, the daemon, dies, and to make it the parent of
    the job's orphaned descendants (a child subreaper), so that `_end_leftovers` finds them."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the slot still exits on EOF from the daemon
        pass


def _end_leftovers() -> None:
    """Kill and reap the processes the job left behind; with none (the usual case), one system call."""
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0]:
                continue  # reaped one that had ended
        except ChildProcessError:
            return
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.kill()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(-1, 0)


def _resolve(func_path: str) -> Callable[..., Any]:
    module, _, name = func_path.rpartition(".")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def _json_dumps(value: Any) -> bytes:
    return json.dumps(value).encode("utf-8")


def _pickle_dumps(value: Any) -> bytes:
    return pickle.dumps(value)
