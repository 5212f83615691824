"""Slot processes, seen from the daemon: start, hand over a job, collect its outcome, stop, replace.

Slots are forked from a forkserver that has already imported the task modules, so a new slot costs a
fork, not an interpreter start. In "pool" mode a slot runs job after job; in "fresh" mode it runs one
job and exits, and its replacement is started at once so the next job does not wait for it.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import signal
import time
from dataclasses import dataclass
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from typing import Any

from scheduler import slot_main
from scheduler.model import Call, ClaimedJob, JobOptions
from scheduler.slot_main import PROTOCOL

START_TIMEOUT_S = 10.0


@dataclass(slots=True)
class Running:
    """The job a slot is running, and when it must be done."""

    job: ClaimedJob
    call: Call
    options: JobOptions
    started_mono: float
    deadline_mono: float


class Slot:
    """One slot process and the job it runs (at most one)."""

    def __init__(self, index: int, context: ForkServerContext, serializer: str, one_job: bool) -> None:
        self.index = index
        self.running: Running | None = None
        self.started_mono = time.monotonic()
        self._one_job = one_job
        self.conn, child_conn = context.Pipe()
        self.process: BaseProcess = context.Process(
            target=slot_main.serve,
            args=(child_conn, serializer, one_job),
            name=f"asched-slot-{index}",
            daemon=True,
        )
        self.process.start()
        child_conn.close()
        self.ready = False
        self.start_ms: float | None = None  # from asking for the process to its "ready" message

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def fds(self) -> tuple[int, int]:
        """The descriptors the daemon polls: messages from the slot, and its exit."""
        return self.conn.fileno(), self.process.sentinel

    @property
    def busy(self) -> bool:
        return self.running is not None

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> bool:
        """Block until the slot has said it is ready; False if it did not in time."""
        if not self.ready and self.conn.poll(timeout_s):
            self.receive()
        return self.ready

    def give(self, job: ClaimedJob, call: Call, options: JobOptions, now_mono: float) -> None:
        """Hand `job` to this (idle) slot."""
        self.running = Running(job, call, options, now_mono, now_mono + options.timeout_s)
        self.conn.send_bytes(pickle.dumps((job.id, call.func_path, call.args, call.kwargs), PROTOCOL))

    def receive(self) -> tuple[Any, ...] | None:
        """The next message if one is waiting: an outcome tuple, or None for the ready message."""
        message = pickle.loads(self.conn.recv_bytes())
        if message[0] == "ready":
            self.ready = True
            self.start_ms = (time.monotonic() - self.started_mono) * 1000
            return None
        return message  # type: ignore[no-any-return]

    def kill(self) -> None:
        """Stop the slot process and everything it started, at once."""
        pid = self.process.pid
        if pid is not None:  # also when the slot is gone: its children may live on in its group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        self.process.join(timeout=5)
        self.conn.close()

    def stop(self) -> None:
        """Ask an idle slot to exit, and make sure it does."""
        with contextlib.suppress(OSError):
            self.conn.send_bytes(pickle.dumps(None, PROTOCOL))
        self.process.join(timeout=2)
        self.kill()

    def death_reason(self) -> str:
        """Why the slot process ended, for the failure reason of the job it was running."""
        code = self.process.exitcode
        if code is None:
            return "its slot process stopped responding"
        if code < 0:
            return f"its slot process was killed by {signal.Signals(-code).name}"
        return f"its slot process exited with code {code} while running it"


def forkserver(preload: list[str]) -> ForkServerContext:
    """A forkserver context whose server has already imported `preload` (the task modules).

    multiprocessing re-runs the parent's main script in every child (not for `python -m scheduler`,
    but for the `adaptive-scheduler` console script); preloading what that script imports keeps
    that re-run to about a millisecond instead of tens.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__", "runpy", "scheduler.cli", "scheduler.slot_main", *preload])
    return context
