"""The daemon: its loop and the composition of intake (Redis), exchange (the settle-and-claim calls),
local queue, dispatcher (jobs to slots), governor (memory) and slots.

Shape: `startup()`, then `tick()` until a stop is asked, then `shutdown()`. One thread owns all state
(there are no others). Each tick: wait (at most one cadence) for a slot outcome, a dead slot or a
queue that got a job; hand local jobs to free slots; settle and claim in one Redis call when due;
housekeeping (lease, recovery, scheduled jobs) on its own slower cadence.
"""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import time
import uuid
from typing import TYPE_CHECKING

import redis
from adaptive_scheduler import controls, keys, outcomes, proctitle, tasks
from adaptive_scheduler.arrivals import Arrivals
from adaptive_scheduler.breaker import BreakerRules, Breakers
from adaptive_scheduler.dispatch import Dispatcher
from adaptive_scheduler.events import Poller
from adaptive_scheduler.exchange import Exchange, InFlight
from adaptive_scheduler.governor import Governor, release_daemon_memory
from adaptive_scheduler.governor.enforcer import Enforcer
from adaptive_scheduler.governor.planner import Planner
from adaptive_scheduler.governor.policy import admitted_queues
from adaptive_scheduler.governor.pressure import Level
from adaptive_scheduler.governor.profile_store import ProfileStore
from adaptive_scheduler.intake import RENEW_SLACK_S, Claim, Intake, ParkedClaim
from adaptive_scheduler.lease import LeaseClock, Renewal
from adaptive_scheduler.master_watch import watch_master
from adaptive_scheduler.metrics import Metrics
from adaptive_scheduler.model import ClaimedJob, Priority
from adaptive_scheduler.notify import Notifier
from adaptive_scheduler.periodic import Periodic
from adaptive_scheduler.prefetch import Prefetch
from adaptive_scheduler.pulse import Pulse
from adaptive_scheduler.queue import LocalQueue
from adaptive_scheduler.redis_url import connect
from adaptive_scheduler.rq_worker import activity_of
from adaptive_scheduler.slotpool import SlotPool
from adaptive_scheduler.slots import End, Running, Slot
from adaptive_scheduler.status import DaemonStatus, gauges, publish, status_line
from adaptive_scheduler.task_profiles import rule_of
from adaptive_scheduler.waker import ControlWatch, Waker
from loguru import logger

if TYPE_CHECKING:
    from adaptive_scheduler.settings import Settings

TICK_S = 0.1
FLUSH_S = 0.002  # a settled job reaches Redis at most this late (or when a batch fills); 5 ms saved
# ~3 % of the daemon's CPU per job at 75 % load and nothing in a drain (alternated runs): not worth it
REFILL_AT = 4  # claim when the local queue has room for this many jobs (bigger batches: each call
# has a fixed cost in the daemon and in Redis; the reply comes back before the slots run dry)


def new_daemon_id() -> str:
    """Unique and free of ':' and '.', which delimit ids in RQ's started registry entries."""
    host = socket.gethostname().replace(".", "-").replace(":", "-")[:32]
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Daemon:
    """One daemon serving the four priority queues of one Redis."""

    def __init__(
        self,
        settings: Settings,
        redis_url: str,
        daemon_id: str | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.settings = settings
        self.redis_url = redis_url
        self.id = daemon_id or new_daemon_id()
        self.client = connect(redis_url, socket_timeout=5, health_check_interval=30)
        self.intake = Intake(self.client, settings, self.id)
        self.local = LocalQueue(settings.local_queue_depth)
        self.prefetch = Prefetch(settings.local_queue_depth, settings.local_queue_max_depth, settings.slots)
        self.governor = Governor(settings)
        self.profiles = ProfileStore(self.client, rule_of(settings), settings.profile_max_tasks)
        planner = Planner(settings, self.profiles, self.governor.monitor.budget)
        self.metrics = Metrics(settings.statsd_url, settings.statsd_prefix)
        self.notifier = notifier or Notifier({})
        rules = BreakerRules(
            settings.breaker_failures, settings.breaker_window_s, settings.breaker_cooldown_s
        )
        self.breakers = Breakers(rules, self.metrics)
        self.periodic: Periodic | None = None  # made at start-up, once the allowlist is imported
        self._next_periodic: float | None = None
        self.lease = LeaseClock(settings.lease_ttl_s, time.monotonic())
        self.stop_requested = False
        self.force_stop = False
        self.counts = dict.fromkeys(outcomes.COUNT_NAMES.values(), 0) | {
            "resumed": 0,
            "dropped": 0,
            "stale": 0,
            "rewatched": 0,
        }
        self.working_s = 0.0  # seconds slots spent running jobs (RQ's total_working_time)
        self._master_watch = watch_master(redis_url)
        self._control = ControlWatch(self.client, keys.CONTROL)
        self.pauses: dict[Priority, controls.Pause] = {}  # as last read from Redis (some may have run out)
        self.paused: frozenset[Priority] = frozenset()  # the priorities not claimed from now
        self._paused_ix: frozenset[int] = frozenset()  # ... as queue indexes
        # (level, paused indexes) -> the queues not served: see `_unserved`
        no_queue: frozenset[int] = frozenset()
        self._unserved_for: tuple[Level | None, frozenset[int], frozenset[int]] = (None, no_queue, no_queue)
        self._next_housekeeping = 0.0
        self._poller = Poller()
        self.exchange = Exchange(self.intake, self._poller, self.counts, self.metrics, self._claimed)
        self.arrivals = Arrivals(
            Waker(self.client, self.intake.queue_keys),
            self._poller,
            park=self._claim_to_park,
            claimed_behind=self.exchange.on_parked_reply,
            lost=self.exchange.lost_reply,
        )
        self.pulse = Pulse()
        self.pool = SlotPool(
            settings,
            self._poller,
            self.governor.monitor,
            self.exchange.settle_later,
            self._job_ended,
            self.pulse,
            redis_url,
            started=self._waited_job_started,
            unrun=self._unrun,
        )
        self.enforcer = Enforcer(settings, self.governor, self.pool, planner)
        self.dispatcher = Dispatcher(
            settings,
            self.local,
            self.pool,
            self.governor,
            self.enforcer,
            self.prefetch,
            self.breakers,
            self.metrics,
            self.counts,
            self.exchange.settle_later,
        )
        self.log = self.dispatcher.log = self.exchange.log = logger.bind(daemon=self.id)

    # --- lifecycle -------------------------------------------------------------------------------

    def join(self) -> None:
        """Take the lease, recover dead daemons' jobs, read the memory profiles: the start-up's Redis
        part, which may be tried again (a full Redis refuses the lease: `service` waits and retries)."""
        self.client.ping()
        self.lease = LeaseClock(self.settings.lease_ttl_s, time.monotonic())
        self.intake.announce()
        self._log_recovered(self.intake.recover())
        self.profiles.refresh(time.time(), force=True)
        now = time.time()
        self._note_pauses(self.client.hgetall(keys.PAUSED), now)  # before the first claim
        controls.prune_levels(self.client, now)

    def startup(self) -> None:
        """Import the allowed modules, start the periodic jobs and the slots (after `join`)."""
        tasks.import_allowed(self.settings.allowed_modules)  # once here, not in every slot; fails start-up
        self.periodic = Periodic(
            self.client,
            self.settings.periodic,
            self.settings.queues,
            self.metrics,
            self.settings.allowed_modules,
            self.settings.serializer,
        )
        self._next_periodic = self.periodic.next_due()
        release_daemon_memory()  # collect and trim first: fewer pages to share, none of them garbage
        gc.freeze()  # forked slots then share the daemon's heap instead of copying it on collection
        self.pool.start()
        self.log.info("daemon ready: {} slots ({} mode)", len(self.pool.slots), self.settings.slot_mode)
        self.notifier.ready(status_line(self, self.intake.depths()))

    def request_stop(self) -> None:
        """First call: stop taking jobs; preemptible jobs checkpoint and go back, others may finish.
        Second call: stop at once (running jobs go back to the front of their queues)."""
        self.force_stop = self.stop_requested
        if not self.stop_requested:
            self.notifier.stopping()
            self.arrivals.unpark()
            self.pool.take_back_all()  # jobs waiting in slots go back to their queues, unrun
            now_mono = time.monotonic()
            for slot in self.pool.slots:
                running = slot.running
                if running is not None and running.task is not None and running.task.preemptible:
                    slot.ask_to_yield(self.settings.preempt_grace_s, "the daemon is stopping", now_mono)
        self.stop_requested = True

    def is_idle(self) -> bool:
        """Nothing running, nothing held locally, nothing waiting in Redis (as far as it can tell) in a
        queue that is not paused."""
        busy = self.pool.busy() or self.pool.waiting() or len(self.local)
        if busy or self.exchange.pending or self.exchange.in_flight:
            return False
        try:
            depths = self.intake.depths()
        except redis.RedisError:
            return False
        # -1: a queue key that is not a list; a paused queue's jobs wait for `resume`, not for this daemon
        return max((d for i, d in enumerate(depths) if i not in self._paused_ix), default=0) <= 0

    def tick(self) -> bool:
        """One turn of the loop; returns True once the daemon may shut down."""
        self._poller.wait(FLUSH_S if self.exchange.pending else min(TICK_S, self.governor.interval_s))
        now, now_mono = time.time(), time.monotonic()
        self.pulse.beat(now_mono)
        self.exchange.check_timeout(now_mono)
        if self.lease.in_doubt(now_mono):
            self._next_housekeeping = 0.0  # renew now: until it answers, nothing starts or is written
        else:
            # claim and hand over first: a job that just arrived should not wait for a memory reading
            # (the claim admits queues by the last reading, at most one governor interval old)
            self._exchange(now)
        self.arrivals.read_answers()
        self.notifier.tick(now_mono)
        if self.governor.due(now_mono):
            self._govern(now_mono)
        self.pool.reap_timeouts(now_mono)
        if self._next_periodic is not None and now >= self._next_periodic and not self.stop_requested:
            assert self.periodic is not None
            self.periodic.fire_due(now, self.governor.level)
            self._next_periodic = self.periodic.next_due()
        if now >= self._next_housekeeping:
            self._housekeeping(now)
        return self.stop_requested and (self.force_stop or not any(slot.busy for slot in self.pool.slots))

    def shutdown(self) -> None:
        """Put back what did not run, stop slots and waker, release the lease."""
        with contextlib.suppress(redis.RedisError):
            self.exchange.finish()
        unrun = [outcomes.put_back(job) for job in reversed(self.local.drain())]
        # the slots' jobs are pushed last, so they end up first in their queues (each in its order)
        unrun += [outcomes.put_back(running.job) for running in reversed(self.pool.stop_all())]
        batch = [*self.exchange.take_pending(), *unrun]
        self.arrivals.close()
        self._control.close()
        try:
            written = self.intake.exchange(batch, 0, time.time())
            self.exchange.count(batch, written.stale, written.damaged)
            if self.exchange.unsure:  # a reply lost (a parked claim's, say): all held is written now
                self.exchange.reconcile([])
            self.intake.release_lease()
        except redis.RedisError as exc:
            if batch:
                self.log.error(
                    "could not write {} outcomes at stop ({}): their jobs stay claimed under this daemon "
                    "until its lease expires, then a daemon puts them back in their queues (a job that "
                    "had finished runs again: at-least-once)",
                    len(batch),
                    exc,
                )
            else:
                self.log.warning("could not release the lease at stop ({}): it expires on its own", exc)
        self.log.info("daemon stopped: {}", self.counts)
        if self.pool.start_ms:
            starts = sorted(self.pool.start_ms)
            self.log.info(
                "slot start-up over the last {} starts: p50 {:.1f} ms, p99 {:.1f} ms",
                len(starts),
                starts[len(starts) // 2],
                starts[max(0, int(len(starts) * 0.99) - 1)],
            )

    # --- operator controls -----------------------------------------------------------------------

    def _watch_controls(self) -> None:
        """Subscribe to the operator's pause/resume messages, unless subscribed (at start, after a drop)."""
        if not self._control.subscribed:
            fd = self._control.subscribe()
            if fd is not None:
                self._poller.add(fd, lambda: self._on_control(fd))

    def _on_control(self, fd: int) -> None:
        """A pause or resume was published: read the pauses now, not at the next housekeeping."""
        changed = self._control.drain()
        if not self._control.subscribed:  # dropped: out of the poll set first, then closed
            self._poller.remove(fd)
            self._control.close()
        if changed:
            self._note_pauses(self.client.hgetall(keys.PAUSED), time.time())

    def _note_pauses(self, raw: dict[bytes, bytes], now: float) -> None:
        self.pauses = controls.parse_pauses(raw)
        self._apply_pauses(now)

    def _apply_pauses(self, now: float) -> None:
        """Claim nothing more of the paused priorities (running jobs finish; jobs held locally go back to
        the front of their queues); look at a resumed queue at the next claim."""
        paused = controls.active(self.pauses, now)
        if paused == self.paused:
            return
        added, resumed = paused - self.paused, self.paused - paused
        self.paused, self._paused_ix = paused, frozenset(int(p) for p in paused)
        self.arrivals.resumed({int(p) for p in resumed})
        if added:
            self.arrivals.unpark()  # they would claim from the newly paused queues
            self.pool.take_back_all()  # jobs waiting in slots come back to the local queue, then this
        held = self.local.drain()
        self._hold_locally(held)
        self._next_housekeeping = 0.0  # publish the status now: `pause` waits until every daemon shows it
        self.log.info(
            "paused priorities now: {} (newly paused: {}; resumed: {})",
            _names(paused),
            _names(added),
            _names(resumed),
        )

    def _unrun(self, given: list[Running]) -> None:
        """Jobs that waited in a slot came back unrun (`SlotPool.take_back_all`): ahead of later arrivals
        in the local queue, or, if their priority was paused meanwhile, to the front of their queues."""
        self._hold_locally([running.job for running in given], ahead=True)

    def _hold_locally(self, jobs: list[ClaimedJob], ahead: bool = False) -> None:
        """Push claimed jobs (most urgent first) into the local queue (`ahead`: before the jobs of their
        priority that arrived later); those of a paused priority go back to the front of their queues
        instead, in their order (each put-back goes to the front: last first)."""
        held = [job for job in jobs if job.priority not in self.paused]
        if ahead:
            self.local.push_ahead(held)
        else:
            for job in held:
                self.local.push(job)
        for job in reversed(jobs):
            if job.priority in self.paused:
                self.exchange.settle_later(outcomes.put_back(job))

    # --- memory governor -------------------------------------------------------------------------

    def _govern(self, now_mono: float) -> None:
        """Read memory; stop running jobs, one at a time, as the reading and the slot cap require."""
        before = self.governor.level
        self.governor.read(now_mono)
        if self.governor.level != before:
            self._next_housekeeping = 0.0  # producers read the level there (`backpressure`): publish it now
            self.arrivals.unpark()  # parked claims are made while calm only
        if self.governor.level >= Level.ELEVATED:
            self.pool.take_back_all()  # only while calm do jobs wait in slots (`Prefetch.behind`)
            self.dispatcher.sweep(time.time())
            if self.settings.p0_lane:  # big jobs are likely to hold the slots now: have the lane ready
                self.pool.open_lane(now_mono, f"memory pressure {self.governor.level.name}")
        self.enforcer.after_reading(now_mono)

    def _make_room_for_p0(self, now_mono: float) -> None:
        """A P0 job heads the local queue: if every slot is busy, the enforcer makes one free."""
        if len(self.local) and self.local.head_priority() == Priority.P0:  # first: runs every busy tick
            self.enforcer.make_slot_for_p0(now_mono)

    # --- claim and dispatch ----------------------------------------------------------------------

    def _exchange(self, now: float) -> None:
        """Hand local jobs to free slots and, when due, send a settle-and-claim call to Redis.

        Slots do not wait for Redis while the local queue holds work: the call goes out after the
        hand-over, for a batch, and its reply is read when it arrives (`Exchange.on_reply`). The
        exception is a more urgent job that arrived in Redis (the waker says so): then the claim comes
        first, so that job is the next to start.
        """
        now_mono = time.monotonic()
        if not self._urgent_arrival():
            self._feed_slots(now, now_mono)
            self._make_room_for_p0(now_mono)
        if self.exchange.in_flight is None and self._exchange_due(now_mono):
            self._send_exchange(now)

    def _claim_to_park(self, index: int) -> ParkedClaim | None:
        """The claim to park behind queue `index`'s watch (`Arrivals`): one job, while calm and serving
        it, sure of the lease, and without `replica_acks` (a parked claim has no WAIT behind it). Taken
        back (`Arrivals.unpark`) when the level, the pauses, the lease or a stop makes it wrong."""
        calm = self.governor.level is Level.NORMAL
        if not (self.settings.park_claims and calm) or self.stop_requested or self.settings.replica_acks:
            return None
        if index in self._unserved():
            return None
        if self.lease.in_doubt(time.monotonic()):
            return None
        return self.intake.parked_claim(1, admitted_queues(self.governor.level), self._paused_ix)

    def _claimable(self) -> int:
        """How many jobs a claim may take now: local room plus one per free slot; at least one while a
        queue more urgent than every job held locally holds jobs (the local queue then holds one over
        its depth, rather than the least urgent job going back to Redis to make room: a put-back and a
        claim again cost Redis two writes, and the room came only as the queue fell below its depth,
        which shrinks as P0 jobs arrive: measured at 75 % load, a P0 job claimed 2.5 ms late behind 14
        jobs held locally)."""
        if self.stop_requested:
            return 0
        calm = self.governor.level is Level.NORMAL
        self.local.depth = self.prefetch.depth(calm, time.monotonic())
        return (self.local.room + len(self.pool.free())) or int(self._more_urgent_in_redis())

    def _send_exchange(self, now: float) -> None:
        queues = admitted_queues(self.governor.level)
        self.exchange.send(self._claimable(), now, queues, self._paused_ix, self.arrivals.arrived)

    def _claimed(self, claim: Claim, flight: InFlight) -> None:
        """An exchange's reply: hold the jobs it claimed (reconciling first if a reply was lost), hand
        them to slots, and learn which queues it left empty or not."""
        self._hold_locally(claim.jobs)
        # after the push (the jobs this reply claimed are held, not lost), and never at a parked claim's
        # reply: the exchange's call may be in flight, its claims not yet held
        if self.exchange.unsure and not flight.parked:
            self.exchange.reconcile(self._held_executions())
        self._feed_slots(time.time(), time.monotonic())  # first: re-arming the waker can wait a moment
        if flight.want:
            took = {int(job.priority) for job in claim.jobs}
            self.arrivals.claimed(flight.arrived, took, claim.emptied, claim.broken, self._paused_ix)

    def _check_master(self) -> None:
        """Behind Sentinel: if the server this daemon exchanges with is not the one the sentinels name
        (a restarted old master that still calls itself master: see `master_watch`), reconnect every
        connection, as after a failover."""
        named = self._master_watch.named if self._master_watch is not None else None
        if named is None:
            return  # not behind Sentinel, or no sentinel has answered yet
        current = self.intake.exchange_address()
        if current is None or named == current:
            return
        self.exchange.drop()
        for index in range(len(self.intake.queue_keys)):
            self.arrivals.reset(index)
        self.client.connection_pool.disconnect()
        self.redis_failed()
        self.log.warning(
            "the sentinels name {}:{} as master, but this daemon was writing to {}:{}: reconnected",
            *named,
            *current,
        )

    def _more_urgent_in_redis(self) -> bool:
        """A queue this daemon serves now holds jobs (`Arrivals.arrived`) more urgent than every job
        held locally."""
        arrived = self.arrivals.arrived - self._unserved()
        return bool(arrived) and (not len(self.local) or min(arrived) < self.local.head_priority())

    def _urgent_arrival(self) -> bool:
        """A job arrived in a queue more urgent than every job held locally, and a claim can take it."""
        return self._more_urgent_in_redis() and self._claimable() > 0

    def _exchange_due(self, now_mono: float) -> bool:
        """Whether to call Redis now: a full or aged batch to settle, room to fill, an urgent arrival."""
        batch = max(REFILL_AT, self.local.depth // 2)  # short jobs: a deeper queue, bigger batches
        if self.exchange.flush_due(now_mono, max(2 * len(self.pool.slots), batch), FLUSH_S):
            return True
        if self.stop_requested:
            return False
        if self._urgent_arrival():
            return True
        if len(self.arrivals.quiet() | self._unserved()) == len(self.intake.queue_keys):
            return False  # every queue was empty at the last claim and got no job since, or is not served
        hungry = not len(self.local) and bool(self.pool.free())
        return hungry or self.local.room >= batch

    def _unserved(self) -> frozenset[int]:
        """Queues a claim may not take from now: paused, or beyond what the memory level admits. A claim
        never looks at them, so never finds them empty: without this, a free slot and a job waiting in
        one of them had the daemon call Redis in a tight loop (3,750 claims/s measured at HIGH).
        Asked several times a tick: kept until the level or the pauses change."""
        level, paused, unserved = self._unserved_for
        if level is not self.governor.level or paused is not self._paused_ix:
            admitted = admitted_queues(self.governor.level)
            unserved = self._paused_ix | frozenset(range(admitted, len(self.intake.queue_keys)))
            self._unserved_for = (self.governor.level, self._paused_ix, unserved)
        return unserved

    def _waited_job_started(self, running: Running, slot: Slot) -> None:
        """A job that waited in `slot` behind another starts: its memory base, its start metrics."""
        self.enforcer.promoted(running, slot)
        self.dispatcher.started(running, time.time())

    def _feed_slots(self, now: float, now_mono: float) -> None:
        # a stopping daemon starts nothing more; one in doubt of its lease starts nothing until it is
        # renewed (a claim's reply read after a freeze may hold jobs another daemon has taken since)
        if not self.stop_requested and not self.lease.in_doubt(now_mono):
            self.dispatcher.feed(now, now_mono)

    def _job_ended(self, running: Running, end: End, seconds: float) -> None:
        """A job left its slot: its task's breaker (its own failures only), memory profile, run-time
        metric and the slots' working time (shown to RQ) learn of it."""
        now = time.time()
        self.working_s += seconds
        if end in (End.FINISHED, End.FAILED):
            self.prefetch.observe(seconds, running.call.func_path)
        if end is End.FAILED or (end is End.FINISHED and self.breakers.watching(running.call.func_path)):
            self.breakers.ended(running.call.func_path, end is End.FINISHED, now)
            if running.call.func_path in self.breakers.not_closed():
                self.pool.take_back_all()  # its jobs waiting in slots are deferred like the others
        self.enforcer.ended(running, end, now)
        if self.metrics.enabled and end in (End.FINISHED, End.FAILED):
            self.metrics.ran(running.task.name if running.task else running.call.func_path, seconds)

    # --- housekeeping ----------------------------------------------------------------------------

    def _housekeeping(self, now: float) -> None:
        # the lease is renewed here (see LeaseClock.renewal_interval_s)
        self._next_housekeeping = now + self.lease.renewal_interval_s()
        sent_mono = time.monotonic()
        self.pool.close_idle_lane(sent_mono, self.settings.p0_lane_idle_s)
        self._watch_controls()
        chores = self.intake.housekeeping(now, self._housekeeping_writes)
        self._lease_answered(Renewal(chores.lease), sent_mono)
        self._note_pauses(chores.pauses, now)
        self.profiles.refresh(now)
        if self.metrics.enabled:
            self.metrics.flush(gauges(self, chores.depths))
        self.notifier.status(status_line(self, chores.depths))
        self._log_recovered(chores.recovered)
        if chores.promoted:
            self.log.debug("moved {} scheduled jobs into their queues", chores.promoted)
        self._check_watches(chores.depths)
        self._check_master()
        self.arrivals.rearm(self._paused_ix)

    def _check_watches(self, depths: list[int]) -> None:
        """Reset the watches that did not wake this daemon although their queue holds jobs (a dead
        connection: the classic failure of other queues after a failover), and claim (`Arrivals`); and
        those whose parked claim ran but whose reply never came (its claim is put back)."""
        for index in self.arrivals.check_parked(self.intake.parked_ran):
            self.counts["rewatched"] += 1
            self.log.warning(
                "the claim parked behind the watch on {} ran but its reply never came: watch reset, "
                "its claim goes back to the queue",
                self.intake.queue_keys[index],
            )
        for index in self.arrivals.check_silent(depths, self._paused_ix):
            self.counts["rewatched"] += 1
            self.log.warning(
                "queue {} holds {} jobs but its watch never woke this daemon: watch reset, claiming",
                self.intake.queue_keys[index],
                depths[index],
            )

    def _lease_answered(self, renewal: Renewal, sent_mono: float) -> None:
        if renewal is Renewal.LOST:
            self._lease_lost()
            return
        if renewal is Renewal.TAKEN_AGAIN:
            self.log.warning(
                "lease lapsed (this daemon or Redis was away for over {:g} s) but no daemon had reclaimed "
                "this one's jobs: lease taken again, jobs kept",
                self.settings.lease_ttl_s,
            )
        self.lease.renewed(sent_mono)

    def _lease_lost(self) -> None:
        """Another daemon reclaimed this one's jobs (it was away past its lease): whatever it still holds
        is someone else's now. Stop the running jobs, drop the local queue and the unwritten outcomes
        (writing them would be refused anyway: see exchange.lua's fencing), and serve again under a new
        id, so that nothing of the old one is ever mistaken for the new one's."""
        self.arrivals.unpark()  # made under the old lease: refused, or read under the new id
        running = self.pool.abandon()
        local = self.local.drain()
        pending = self.exchange.take_pending()
        self.counts["stale"] += len(pending)
        old, self.id = self.id, new_daemon_id()
        proctitle.set_title(f"daemon {self.id}")
        self.intake.rejoin(self.id)
        self.lease.renewed(time.monotonic())
        self.log = self.dispatcher.log = self.exchange.log = logger.bind(daemon=self.id)
        self.log.error(
            "lease lost: daemon {} was away for over {:g} s and another daemon reclaimed its jobs; "
            "stopped {} running jobs, dropped {} held locally and {} unwritten outcomes (their jobs are "
            "another daemon's now); serving again as {}",
            old,
            self.settings.lease_ttl_s,
            len(running),
            len(local),
            len(pending),
            self.id,
        )

    def redis_failed(self) -> None:
        """A Redis call failed (at every failure of an outage, so that the first round trip after it,
        whose housekeeping may run before anyone notices Redis is back, is covered too): reclaim no
        peer until a lease after the last failure, since they too were cut off and need that long to
        renew (an outage is not a death); and reconcile this daemon's own claims at the next reply,
        since a Redis that restarted or failed over may have lost writes it had acknowledged (a settle
        lost there leaves a claim this daemon no longer holds: it goes back to its queue)."""
        self.intake.reclaim_after = time.monotonic() + self.settings.lease_ttl_s + RENEW_SLACK_S
        self.exchange.unsure = True

    def _housekeeping_writes(self, pipe: redis.client.Pipeline) -> None:
        now, now_mono = time.time(), time.monotonic()
        publish(pipe, self._status(), self.settings.lease_ttl_s)
        sample, ttl_s = self.governor.sample, self.settings.lease_ttl_s
        level = controls.level_entry(self.governor.level.name, sample.percent if sample else 0.0, now + ttl_s)
        pipe.hset(keys.LEVELS, self.id, level)
        self.intake.worker.heartbeat(pipe, activity_of(self, now, now_mono), now)
        self.profiles.write(pipe)

    def _held_executions(self) -> list[str]:
        """The executions this daemon holds: local, running, waiting in slots, ended but not written."""
        held = [job.execution_id for job in self.local]
        held += [slot.running.job.execution_id for slot in self.pool.slots if slot.running is not None]
        held += [running.job.execution_id for running in self.pool.waiting()]
        held += self.arrivals.parked_executions()  # claims whose reply has not come yet
        return held + [item.job.execution_id for item in self.exchange.pending]

    def _log_recovered(self, recovered: list[str]) -> None:
        if recovered:
            self.log.warning("recovered {} jobs of dead daemons: {}", len(recovered), recovered[:10])

    def _status(self) -> DaemonStatus:
        return DaemonStatus.of(self)


def _names(priorities: frozenset[Priority]) -> str:
    return " ".join(p.name for p in sorted(priorities)) or "none"
