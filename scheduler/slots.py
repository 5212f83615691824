"""Slot processes, seen from the daemon: start, hand over a job, collect its outcome, stop, replace.

A slot is forked straight from the daemon, which has already imported the task modules and frozen its
heap (`gc.freeze`), so a new slot costs a fork (about a millisecond) and shares the daemon's pages
copy-on-write instead of holding a second interpreter. The daemon is single-threaded when it forks
(no waker threads: see `waker`), which is what makes forking it safe. The child closes every inherited
descriptor but its end of the pipe and never returns into daemon code: it runs `slot_main.serve` and
leaves with `os._exit`.

The daemon learns of a slot's exit from a pidfd (pollable; readable once the process has ended) and
reaps it with waitpid. In "pool" mode a slot runs job after job; in "fresh" mode it runs one job and
exits, and its replacement is forked at once so the next job does not wait for it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Any

from adaptive_scheduler import proctitle, slot_main
from adaptive_scheduler.channel import Channel
from adaptive_scheduler.governor.heap import HeapCell
from adaptive_scheduler.governor.victim import Kind
from adaptive_scheduler.model import Call, ClaimedJob, JobOptions
from adaptive_scheduler.pulse import Pulse
from adaptive_scheduler.tasks.registry import TaskInfo

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 2.0


class End(Enum):
    """How a job left its slot, as the breaker and the memory profiles need to know it."""

    FINISHED = "finished"
    FAILED = "failed"  # the task's own failure (an exception, a crash, its timeout)
    STOPPED_FOR_MEMORY = "stopped_for_memory"  # by the governor or the slot cap: not the task's fault
    INTERRUPTED = "interrupted"  # yielded its slot for another reason (a P0 job, the daemon stopping)


@dataclass(slots=True)
class Running:
    """The job a slot is running, and when it must be done."""

    job: ClaimedJob
    call: Call
    options: JobOptions
    started_mono: float
    deadline_mono: float
    task: TaskInfo | None = None
    checkpoint: str = ""  # the last state the job saved (versioned JSON), "" for none
    preempt_deadline: float | None = None  # asked to checkpoint: killed if still running by then
    preempt_reason: str = ""
    for_memory: bool = False  # the stop asked of it is for memory (pressure, slot cap)
    kind: Kind = Kind.PLAIN  # what stopping it costs (victim choice; at-most-once jobs fail)
    need: int | None = None  # bytes its task was predicted to add at its peak (None: not profiled yet)
    base: tuple[int, int] = (0, 0)  # the slot's (RSS, malloc) growth before this job, at the last reading
    footprint: int = 0  # what this job has added at the last reading: the larger of RSS and malloc growth
    peak: int = 0  # the most it added at any reading
    oom_kills_before: int | None = None  # the kernel's OOM kill count at the reading before it started

    def note_growth(self, growth: tuple[int, int]) -> None:
        """A reading of the slot's (RSS, malloc) growth while this job runs.

        Each is measured from its own base: a slot whose RSS stayed high after an earlier job (malloc
        keeps freed memory) shows this job's allocations in malloc's count, not in RSS.
        """
        self.footprint = max(0, growth[0] - self.base[0], growth[1] - self.base[1])
        self.peak = max(self.peak, self.footprint)

    def remaining(self, unprofiled_bytes: int) -> int:
        """Bytes the job is still predicted to add."""
        return max(0, (self.need if self.need is not None else unprofiled_bytes) - self.footprint)


# If the kernel's OOM killer must act (memory the governor could not see coming), it kills the process
# with the highest score: a slot's job, which runs again (`SlotPool._oom_killed`), rather than the daemon
# with every job it holds, or Redis. The P0 lane's slot ranks below the others. Raising one's own score
# needs no privilege.
SLOT_OOM_SCORE_ADJ = 500
LANE_OOM_SCORE_ADJ = 300


@dataclass(frozen=True, slots=True)
class SlotSpec:
    """How slot processes are made: the same for every slot of a pool (the P0 lane aside: its nice)."""

    serializer: str
    one_job: bool  # fresh mode: one job, then the process exits
    heap_interval_s: float = 0.1  # how often the slot writes its malloc reading
    nice: int = 0
    pulse: Pulse | None = None  # the daemon's pulse, for the slot's dead man's switch
    fence_s: float = 0.0  # ... which stops the job once the daemon has been silent this long
    role: str = "slot"  # its process title: "slot 2", "slot 2 (P0 lane)" (adaptive_scheduler.proctitle)
    oom_score_adj: int = 0  # raised in the slot: the kernel's OOM killer takes a slot, not the daemon
    redis_url: str = ""  # for the connection of the Job that rq.get_current_job() returns in a job
    queues: tuple[str, ...] = ()  # RQ queue names by priority: that Job's origin


class Slot:
    """One slot process, the job it runs (at most one) and the short jobs waiting in it behind that job
    (sent, not started: `prefetch.Prefetch.behind`)."""

    def __init__(self, index: int, spec: SlotSpec) -> None:
        self.index = index
        self.running: Running | None = None
        self.waiting: deque[Running] = deque()  # in the order sent; each starts when the one before ends
        self.taking_back = False  # TAKE_BACK sent, its answer not read yet
        self.started_mono = time.monotonic()
        self.ready = False
        self.start_ms: float | None = None  # from the fork to the slot's "ready" message
        self.exitcode: int | None = None
        self.conn, child_conn = Channel.pair()
        self.heap = HeapCell()  # the slot writes its malloc reading here (adaptive_scheduler.governor.heap)
        self.pid = _fork_slot(child_conn, spec, self.heap)
        child_conn.close()
        self.pidfd = os.pidfd_open(self.pid)

    @property
    def fds(self) -> tuple[int, int]:
        """The descriptors the daemon polls: messages from the slot, and its exit."""
        return self.conn.fileno(), self.pidfd

    @property
    def busy(self) -> bool:
        return self.running is not None

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> bool:
        """Block until the slot has said it is ready; False if it did not in time (or it died)."""
        deadline = time.monotonic() + timeout_s
        while not self.ready and self.conn.poll(max(0.0, deadline - time.monotonic())):
            try:
                self.receive()
            except (EOFError, OSError):
                break
        return self.ready

    def give(self, running: Running, resume_state: Any) -> None:
        """Hand a job to this slot: it runs at once if the slot is idle, else after the jobs before it.

        A slot may have died since the daemon last looked (killed while busy, say): then the job waits
        here, unsent, and comes back unrun when the daemon reads the slot's exit; no more are given."""
        call, job = running.call, running.job
        meta = job.fields.get("meta")  # for the Job a job's rq.get_current_job() returns
        try:
            self.conn.send(
                (job.id, call.func_path, call.args, call.kwargs, resume_state, int(job.priority), meta)
            )
        except OSError:
            self.ready = False
            self.waiting.append(running)
            return
        if self.running is None:
            self.running = running
        else:
            self.waiting.append(running)

    def next_job(self, now_mono: float) -> Running | None:
        """The running job has ended: the first waiting job has started (about now); it runs now."""
        self.running = self.waiting.popleft() if self.waiting else None
        if self.running is not None:
            self.running.started_mono = now_mono
            self.running.deadline_mono = now_mono + self.running.options.timeout_s
        return self.running

    def take_back(self) -> None:
        """Ask for the waiting jobs back, unstarted (answered with GIVEN_BACK)."""
        if self.waiting and not self.taking_back:
            with contextlib.suppress(OSError):  # gone: its exit settles its jobs
                self.conn.send(slot_main.TAKE_BACK)
                self.taking_back = True

    def given_back(self, job_ids: list[str], now_mono: float) -> list[Running]:
        """The slot gave back these waiting jobs (those sent before the TAKE_BACK that had not started;
        any sent after it still wait): they leave the slot, unrun."""
        self.taking_back = False
        ids = set(job_ids)
        given = [running for running in self.waiting if running.job.id in ids]
        self.waiting = deque(running for running in self.waiting if running.job.id not in ids)
        if self.running is not None and self.running.job.id in ids:
            # it was next when the job before it ended, so it was taken for started; the slot read the
            # TAKE_BACK first: it did not, and the next one sent after the TAKE_BACK (if any) did
            given.insert(0, self.running)
            self.next_job(now_mono)
        return given

    def ask_to_yield(self, grace_s: float, reason: str, now_mono: float, for_memory: bool = False) -> None:
        """Ask the running job to checkpoint and stop (SIGUSR1); it is killed after `grace_s`. The jobs
        waiting behind it are taken back first: its slot is replaced once it yields."""
        if self.running is None or self.running.preempt_deadline is not None:
            return
        self.take_back()
        self.running.preempt_deadline = now_mono + grace_s
        self.running.preempt_reason = reason
        self.running.for_memory = for_memory
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGUSR1)

    def receive(self) -> list[tuple[Any, ...] | None]:
        """What the slot has sent (one read; its descriptor is readable): outcome and checkpoint tuples,
        None for the ready message. EOFError or OSError once the slot has gone."""
        messages = self.conn.receive_ready()
        for i, message in enumerate(messages):
            if message[0] == "ready":
                self.ready = True
                self.start_ms = (time.monotonic() - self.started_mono) * 1000
                messages[i] = None
        return messages

    def exited(self) -> bool:
        """Reap the process if it has ended; True once it has."""
        if self.exitcode is None:
            with contextlib.suppress(ChildProcessError):
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    self.exitcode = os.waitstatus_to_exitcode(status)
        return self.exitcode is not None

    def kill(self) -> None:
        """Stop the slot process and everything it started, at once, and reap it."""
        self.send_kill()
        self.reap(block=True)

    def send_kill(self) -> None:
        """SIGKILL the slot's process group (the job's children die too) without waiting for the exit:
        a process with hundreds of MiB takes milliseconds to tear down, and the daemon has work to do.
        Its pidfd becomes readable once it has ended; then `reap()`."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def reap(self, block: bool) -> bool:
        """Collect the ended process and close what the daemon held for it; False if it still runs."""
        if not self.exited():
            if not block:
                return False
            with contextlib.suppress(ChildProcessError):
                _, status = os.waitpid(self.pid, 0)
                self.exitcode = os.waitstatus_to_exitcode(status)
        self._close()
        return True

    def stop(self) -> None:
        """Ask an idle slot to exit, and make sure it does."""
        with contextlib.suppress(OSError):
            self.conn.send(None)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while not self.exited() and time.monotonic() < deadline:
            time.sleep(0.005)
        self.kill()

    def death_reason(self) -> str:
        """Why the slot process ended, for the failure reason of the job it was running."""
        code = self.exitcode
        if code is None:
            return "its slot process stopped responding"
        if code < 0:
            return f"its slot process was killed by {signal.Signals(-code).name}"
        return f"its slot process exited with code {code} while running it"

    def _close(self) -> None:
        self.conn.close()
        self.heap.close()
        with contextlib.suppress(OSError):
            os.close(self.pidfd)


def _fork_slot(conn: Channel, spec: SlotSpec, heap: HeapCell) -> int:
    """Fork a slot process running `slot_main.serve` on `conn`, `nice` steps below the daemon's CPU
    priority; returns its pid (in the daemon)."""
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        keep = conn.fileno()
        os.closerange(3, keep)
        os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX"))
        proctitle.set_title(spec.role)  # else `ps` shows the daemon's title for every slot
        if spec.nice:
            os.nice(spec.nice)
        if spec.oom_score_adj:
            _raise_oom_score(spec.oom_score_adj)
        slot_main.serve(conn, spec, heap)
    except BaseException:  # the slot must never return into the daemon's code
        code = 70
    finally:
        os._exit(code)


def _raise_oom_score(adj: int) -> None:
    """Make this process the OOM killer's preferred victim (never lowers a score already higher)."""
    path = "/proc/self/oom_score_adj"
    with contextlib.suppress(OSError, ValueError), open(path, "r+") as file:
        if int(file.read()) < adj:
            file.seek(0)
            file.write(str(adj))
