"""The daemon: its loop and the composition of intake, local queue and slots.

Shape: `startup()`, then `tick()` until a stop is asked, then `shutdown()`. One thread owns all state;
the waker threads only write to a pipe. Each tick: wait (at most one cadence) for a slot outcome, a dead
slot or a wake-up; settle what ended in one Redis call; claim what fits in one Redis call; hand jobs to
free slots; housekeeping (lease, recovery, scheduled jobs) on its own slower cadence.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections import deque
from multiprocessing.connection import wait

import redis
from loguru import logger

import tasks  # noqa: F401 - registers the built-in tasks: the allowlist
from scheduler import outcomes
from scheduler.errors import PayloadError
from scheduler.intake import Intake
from scheduler.model import Call, ClaimedJob, JobOptions, Settlement
from scheduler.payload import decode_call, decode_options
from scheduler.queue import LocalQueue
from scheduler.slots import Slot, forkserver
from scheduler.status import DaemonStatus, publish
from scheduler.waker import Waker
from settings import Settings

TICK_S = 0.1
FLUSH_S = 0.002  # a settled job reaches Redis at most this late (or when a batch fills)
REFILL_AT = 2  # claim when the local queue has room for this many jobs
HOUSEKEEPING_S = 1.0


def new_daemon_id() -> str:
    """Unique and free of ':' and '.', which delimit ids in RQ's started registry entries."""
    host = socket.gethostname().replace(".", "-").replace(":", "-")[:32]
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Daemon:
    """One daemon serving the four priority queues of one Redis."""

    def __init__(self, settings: Settings, redis_url: str, daemon_id: str | None = None) -> None:
        self.settings = settings
        self.redis_url = redis_url
        self.id = daemon_id or new_daemon_id()
        self.client = redis.Redis.from_url(redis_url, socket_timeout=5, health_check_interval=30)
        self.intake = Intake(self.client, settings, self.id)
        self.local = LocalQueue(settings.local_queue_depth)
        self.defaults = JobOptions(
            settings.default_job_timeout_s, settings.default_result_ttl_s, settings.default_failure_ttl_s
        )
        self.slots: list[Slot] = []
        self.slot_start_ms: deque[float] = deque(maxlen=1000)  # recent slot start-up times
        self.stop_requested = False
        self.force_stop = False
        self.counts = {"finished": 0, "failed": 0, "retried": 0, "put_back": 0, "dropped": 0}
        self._context = forkserver(["tasks", *settings.allowed_modules])
        self._waker = Waker(redis_url, self.intake.queue_keys)
        self._pending: list[Settlement] = []
        self._redis_empty = False  # the last claim found every queue empty
        self._woken = False  # the waker saw a queue get a job since
        self._next_housekeeping = 0.0
        self.log = logger.bind(daemon=self.id)

    # --- lifecycle -------------------------------------------------------------------------------

    def startup(self) -> None:
        """Take the lease, recover dead daemons' jobs, start the slots and the waker."""
        self.client.ping()
        self.intake.announce()
        self._recover()
        self.slots = [self._new_slot(i) for i in range(self.settings.slots)]
        for slot in self.slots:
            slot.wait_ready()
        self._waker.start()
        self.log.info("daemon ready: {} slots ({} mode)", len(self.slots), self.settings.slot_mode)

    def run(self) -> None:
        """Serve until `request_stop()`; the caller handles signals."""
        self.startup()
        try:
            while not self.tick():
                pass
        finally:
            self.shutdown()

    def request_stop(self) -> None:
        """First call: stop taking jobs and let running ones finish. Second: stop at once."""
        self.force_stop = self.stop_requested
        self.stop_requested = True

    def is_idle(self) -> bool:
        """Nothing running, nothing held locally, nothing waiting in Redis."""
        if any(slot.busy for slot in self.slots) or len(self.local) or self._pending:
            return False
        return sum(self.intake.depths()) == 0

    def tick(self) -> bool:
        """One turn of the loop; returns True once the daemon may shut down."""
        self._wait_for_events(FLUSH_S if self._pending else TICK_S)
        now = time.time()
        self._reap_timeouts(time.monotonic())
        self._exchange(now)
        if now >= self._next_housekeeping:
            self._housekeeping(now)
        return self.stop_requested and (self.force_stop or not any(slot.busy for slot in self.slots))

    def shutdown(self) -> None:
        """Put back what did not run, stop slots and waker, release the lease."""
        unrun = [outcomes.put_back(job) for job in reversed(self.local.drain())]
        for slot in self.slots:
            if slot.running is not None:
                unrun.append(outcomes.put_back(slot.running.job))  # last pushed = first in its queue
                slot.kill()
            else:
                slot.stop()
        batch, self._pending = [*self._pending, *unrun], []
        self.intake.exchange(batch, 0, time.time())
        self._count(batch)
        self._waker.stop()
        self.intake.release_lease()
        self.log.info("daemon stopped: {}", self.counts)
        if self.slot_start_ms:
            starts = sorted(self.slot_start_ms)
            self.log.info(
                "slot start-up over the last {} starts: p50 {:.1f} ms, p99 {:.1f} ms",
                len(starts),
                starts[len(starts) // 2],
                starts[max(0, int(len(starts) * 0.99) - 1)],
            )

    # --- events ----------------------------------------------------------------------------------

    def _wait_for_events(self, timeout_s: float) -> None:
        by_conn = {slot.conn: slot for slot in self.slots}
        by_sentinel = {slot.process.sentinel: slot for slot in self.slots}
        ready = wait([*by_conn, *by_sentinel, self._waker.fd], timeout=timeout_s)
        for item in ready:
            if item in by_conn:
                self._receive(by_conn[item])
        for item in ready:
            if item in by_sentinel and by_sentinel[item].process.exitcode is not None:
                self._replace(by_sentinel[item])
        if self._waker.fd in ready:
            self._waker.drain()
            self._woken = True

    def _receive(self, slot: Slot) -> None:
        try:
            while slot.conn.poll():
                message = slot.receive()
                if message is not None:
                    self._on_outcome(slot, message)
        except (EOFError, OSError):
            pass  # the slot died; its sentinel says so and `_replace` settles the job

    def _on_outcome(self, slot: Slot, message: tuple[object, ...]) -> None:
        job_id, ok, payload, started, ended = message
        running = slot.running
        if running is None or running.job.id != job_id:
            self.log.warning("slot {} reported an outcome for job {} it was not running", slot.index, job_id)
            return
        slot.running = None
        if ok:
            settlement = outcomes.finished(running.job, running.options, payload, started, ended)  # type: ignore[arg-type]
        else:
            settlement = outcomes.failed(running.job, running.options, str(payload), started, ended)  # type: ignore[arg-type]
            self._log_failure(settlement)
        self._pending.append(settlement)
        if self.settings.slot_mode == "fresh":
            self._replace(slot)

    def _replace(self, slot: Slot) -> None:
        """Settle the job of a slot that died (or finished its one job) and start a new slot."""
        if self.slots[slot.index] is not slot:
            return  # already replaced (its sentinel fired after we retired it)
        running, slot.running = slot.running, None
        if running is not None:
            reason = f"{running.call.func_path}: {slot.death_reason()}"
            now = time.time()
            settlement = outcomes.failed(running.job, running.options, reason, now, now)
            self._log_failure(settlement)
            self._pending.append(settlement)
            self.log.warning("slot {} (pid {}) replaced: {}", slot.index, slot.pid, slot.death_reason())
        slot.kill()
        new = self._new_slot(slot.index)
        self.slots[slot.index] = new

    def _reap_timeouts(self, now_mono: float) -> None:
        for slot in self.slots:
            running = slot.running
            if running is not None and now_mono > running.deadline_mono:
                slot.running = None
                slot.kill()
                reason = f"job exceeded its timeout of {running.options.timeout_s:g} s and was stopped"
                now = time.time()
                started = now - (now_mono - running.started_mono)
                settlement = outcomes.failed(running.job, running.options, reason, started, now)
                self._log_failure(settlement)
                self._pending.append(settlement)
                self.slots[slot.index] = self._new_slot(slot.index)

    # --- claim and dispatch ----------------------------------------------------------------------

    def _exchange(self, now: float) -> None:
        """Feed free slots from the local queue; when due, settle and claim (one Redis call) and feed again.

        Slots never wait for Redis when the local queue holds work: the round trip happens after the
        hand-over, for a batch of settlements and claims (see `_exchange_due`).
        """
        now_mono = time.monotonic()
        self._feed_slots(now, now_mono)
        if not self._exchange_due(now_mono):
            return
        free = sum(1 for slot in self.slots if not slot.busy and slot.ready)
        want = 0 if self.stop_requested else self.local.room + free
        batch, self._pending = self._pending, []
        self._woken = False
        claimed, missing = self.intake.exchange(batch, want, now)
        self._count(batch)
        for job in claimed:
            self.local.push(job)
        self._note_missing(missing)
        self._redis_empty = len(claimed) + len(missing) < want
        if self._redis_empty:
            self._waker.idle.set()
        self._feed_slots(now, now_mono)

    def _exchange_due(self, now_mono: float) -> bool:
        """Whether to call Redis now: to settle a full or aged batch, to refill, or after a wake-up."""
        if self._pending and (
            len(self._pending) >= len(self.slots) or now_mono - self._pending[0].noted_mono >= FLUSH_S
        ):
            return True
        if self.stop_requested:
            return False
        if self._woken:
            return True
        if self._redis_empty:
            return False  # the waker tells us when a queue gets a job
        hungry = any(not slot.busy and slot.ready for slot in self.slots)
        return hungry or self.local.room >= REFILL_AT

    def _feed_slots(self, now: float, now_mono: float) -> None:
        """Hand the most urgent local jobs to idle slots (none once a stop is asked)."""
        if self.stop_requested:
            return
        for slot in self.slots:
            while not slot.busy and slot.ready and len(self.local):
                self._start(slot, self.local.pop(), now, now_mono)

    def _start(self, slot: Slot, job: ClaimedJob, now: float, now_mono: float) -> bool:
        """Hand `job` to `slot`; False if the job was rejected instead (the slot stays free)."""
        try:
            options = decode_options(job.fields, self.defaults)
        except PayloadError as exc:
            self._reject(job, self.defaults, str(exc), now)
            return False
        try:
            data = job.fields.get("data")
            call: Call = decode_call(data, self.settings.serializer, self.settings.allowed_modules)
        except PayloadError as exc:
            self._reject(job, options, str(exc), now)
            return False
        slot.give(job, call, options, now_mono)
        return True

    def _reject(self, job: ClaimedJob, options: JobOptions, reason: str, now: float) -> None:
        settlement = outcomes.rejected(job, options, reason, now)
        self._log_failure(settlement)
        self._pending.append(settlement)

    def _count(self, batch: list[Settlement]) -> None:
        for item in batch:
            self.counts[outcomes.count_name(item.outcome)] += 1

    # --- housekeeping ----------------------------------------------------------------------------

    def _housekeeping(self, now: float) -> None:
        self._next_housekeeping = now + HOUSEKEEPING_S
        self.intake.announce()
        publish(self.client, self._status(), self.settings.lease_ttl_s)
        self._recover()
        moved = self.intake.promote_scheduled(now)
        if moved:
            self.log.debug("moved {} scheduled jobs into their queues", moved)

    def _recover(self) -> None:
        recovered = self.intake.recover()
        if recovered:
            self.log.warning("recovered {} jobs of dead daemons: {}", len(recovered), recovered[:10])

    def _note_missing(self, missing: list[str]) -> None:
        if missing:
            self.counts["dropped"] += len(missing)
            self.log.warning(
                "dropped {} queued ids whose job hash is gone (expired ttl or deleted)", len(missing)
            )

    def _new_slot(self, index: int) -> Slot:
        if self.slots and self.slots[index].start_ms is not None:
            self.slot_start_ms.append(self.slots[index].start_ms)  # type: ignore[arg-type]
        return Slot(
            index, self._context, self.settings.serializer, one_job=self.settings.slot_mode == "fresh"
        )

    def _log_failure(self, settlement: Settlement) -> None:
        last_line = settlement.reason.strip().splitlines()[-1] if settlement.reason.strip() else ""
        self.log.bind(job_id=settlement.job.id, priority=settlement.job.priority.name).warning(
            "job {} {}: {}", settlement.job.id, settlement.outcome.value, last_line[:300]
        )

    def _status(self) -> DaemonStatus:
        return DaemonStatus.of(self)
