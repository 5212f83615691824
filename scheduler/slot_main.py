"""The code a slot process runs: receive a call, run it, send back its outcome. Nothing else.

It runs in a process forked from the daemon and touches nothing of the daemon's: no Redis, no RQ, no
logging. The daemon checked the call against the allowlist before sending it; the slot imports only
that function's module (the daemon has usually imported it already, before forking).
The slot leads its own process group, so a job's children are stopped with it, and a terminal's
Ctrl-C reaches only the daemon, which decides what happens to running jobs.
"""

from __future__ import annotations

import ctypes
import importlib
import json
import os
import pickle
import signal
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

# Messages, daemon -> slot: (job_id, func_path, args, kwargs), or None to exit.
# slot -> daemon: ("ready", pid) once, then (job_id, ok, payload, started_at, ended_at) per job, where
# payload is the serialized return value (ok) or the failure text.
Outcome = tuple[str, bool, bytes | str, float, float]
PR_SET_PDEATHSIG = 1
PROTOCOL = pickle.HIGHEST_PROTOCOL  # the pipe's framing; both ends run the same Python


def serve(conn: Connection, serializer: str, one_job: bool) -> None:
    """Run calls from `conn` until told to stop (or after one call when `one_job`)."""
    os.setpgrp()
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the daemon's handlers were inherited by the fork
    dumps = _pickle_dumps if serializer == "pickle" else _json_dumps
    conn.send_bytes(pickle.dumps(("ready", os.getpid()), PROTOCOL))
    while (message := pickle.loads(conn.recv_bytes())) is not None:
        conn.send_bytes(pickle.dumps(run(message, dumps), PROTOCOL))
        if one_job:
            break
    conn.close()


def run(message: tuple[str, str, tuple[Any, ...], dict[str, Any]], dumps: Callable[[Any], bytes]) -> Outcome:
    """Run one call; any exception becomes a failure text, like RQ's exc_info."""
    job_id, func_path, args, kwargs = message
    started_at = time.time()
    try:
        value = _resolve(func_path)(*args, **kwargs)
    except BaseException:  # the job's own failure, SystemExit and MemoryError included
        return job_id, False, traceback.format_exc(), started_at, time.time()
    try:
        payload = dumps(value)
    except (TypeError, ValueError, pickle.PicklingError) as exc:
        reason = f"the return value of {func_path} cannot be serialized: {exc}"
        return job_id, False, reason, started_at, time.time()
    return job_id, True, payload, started_at, time.time()


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this slot when its parent, the daemon, dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the slot still exits on EOF from the daemon
        pass


def _resolve(func_path: str) -> Callable[..., Any]:
    module, _, name = func_path.rpartition(".")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def _json_dumps(value: Any) -> bytes:
    return json.dumps(value).encode("utf-8")


def _pickle_dumps(value: Any) -> bytes:
    return pickle.dumps(value)
