"""The daemon's one conversation with Redis about jobs: write the outcomes of the jobs that ended and
claim the next ones, in one Lua call (`Intake.send_exchange`), sent without waiting for its reply.

What this keeps: the outcomes not yet written (`pending`), the call in flight (at most one), and
whether a reply was lost (`unsure`). A lost reply does not mean a lost call: its outcomes are written
again (at worst a duplicate result entry) and, at the next reply, the daemon's claims in Redis are
reconciled with the jobs it holds (a claim it never heard of goes back to its queue). The daemon
decides when to call and what to do with the jobs a reply claims (`deliver`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from adaptive_scheduler import outcomes
from adaptive_scheduler.events import Poller
from adaptive_scheduler.intake import Claim, Intake, ParkedClaim
from adaptive_scheduler.metrics import Metrics
from adaptive_scheduler.model import Settlement
from loguru import logger

EXCHANGE_TIMEOUT_S = 5.0  # the client's socket timeout: a reply later than this is not coming


@dataclass(frozen=True, slots=True)
class InFlight:
    """The exchange sent to Redis whose reply has not been read yet."""

    batch: list[Settlement]
    want: int
    arrived: set[int]  # the arrivals it answers for
    fd: int
    sent_mono: float = 0.0
    parked: bool = False  # a claim parked behind a watch (`arrivals`), not this exchange's call


class Exchange:
    """Settle-and-claim calls, one in flight, and what their replies say of the daemon's claims."""

    def __init__(
        self,
        intake: Intake,
        poller: Poller,
        counts: dict[str, int],
        metrics: Metrics,
        deliver: Callable[[Claim, InFlight], None],
    ) -> None:
        self.intake = intake
        self._poller = poller
        self.counts = counts  # the daemon's: written, dropped and stale outcomes are counted here
        self.metrics = metrics
        self._deliver = deliver
        self.pending: list[Settlement] = []
        self.unsure = False  # a reply was lost: reconcile claims at the next one
        self.in_flight: InFlight | None = None
        self.log = logger  # the daemon binds its id (and binds it again when it serves under a new one)

    def settle_later(self, settlement: Settlement) -> None:
        """Queue an outcome for the next call (the list object is swapped at each one)."""
        self.pending.append(settlement)

    def flush_due(self, now_mono: float, batch: int, flush_s: float) -> bool:
        """Whether the outcomes waiting make a call worth it now: `batch` of them, or one `flush_s` old."""
        return bool(self.pending) and (
            len(self.pending) >= batch or now_mono - self.pending[0].noted_mono >= flush_s
        )

    def send(self, want: int, now: float, queues: int, paused: frozenset[int], arrived: set[int]) -> None:
        """Write every pending outcome and claim up to `want` jobs from the first `queues` queues (not
        the `paused` ones); the reply is read when it arrives (`on_reply`)."""
        batch, self.pending = self.pending, []
        try:
            fd = self.intake.send_exchange(batch, want, now, queues, paused)
        except redis.RedisError:
            self.pending = batch + self.pending
            raise
        self.in_flight = InFlight(batch, want, set(arrived), fd, time.monotonic())
        self._poller.add(fd, self.on_reply)

    def on_reply(self) -> None:
        """The reply is readable: count what was written, hand the claimed jobs to the daemon."""
        flight, self.in_flight = self.in_flight, None
        assert flight is not None
        self._poller.remove(flight.fd)
        try:
            claim = self.intake.receive_exchange()
        except redis.RedisError:
            self.pending = flight.batch + self.pending
            self.unsure = True
            raise
        self.count(flight.batch, claim.stale, claim.damaged)
        self._note_damaged(claim.damaged)
        self._note_missing(claim.missing)
        self._deliver(claim, flight)
        if flight.want:
            self._note_broken(claim.broken)

    def on_parked_reply(self, index: int, parked: ParkedClaim, reply: Any) -> None:
        """A claim parked behind queue `index`'s watch ran: its jobs go to the daemon as a reply's do."""
        claim = self.intake.parse_claim(reply)
        self._note_missing(claim.missing)
        self._note_broken(claim.broken)
        want = len(parked.executions)
        self._deliver(claim, InFlight([], want, {index}, -1, time.monotonic(), parked=True))

    def lost_reply(self) -> None:
        """A claim's reply was lost (its connection dropped): reconcile at the next exchange's reply."""
        self.unsure = True

    def reconcile(self, held_executions: list[str]) -> None:
        """After a lost reply (`unsure`), put back this daemon's claims that it does not hold (call it
        once the jobs of the reply just read are held, so they are not taken for lost)."""
        recovered = self.intake.reconcile(held_executions)
        self.unsure = False
        if recovered:
            self.log.warning("put back {} claims whose reply was lost: {}", len(recovered), recovered[:10])

    def check_timeout(self, now_mono: float) -> None:
        """No reply within `EXCHANGE_TIMEOUT_S`: its connection died without a word (a partition) or
        hangs. Drop it (the next call connects afresh), as when a reply is lost."""
        if self.in_flight is not None and now_mono - self.in_flight.sent_mono > EXCHANGE_TIMEOUT_S:
            self.drop()
            self.log.warning(
                "no reply to the exchange within {:g} s: connection dropped, retrying", EXCHANGE_TIMEOUT_S
            )

    def drop(self) -> None:
        """Drop the connection, and the call in flight if any (its outcomes are written again, its
        claims reconciled at the next reply)."""
        flight, self.in_flight = self.in_flight, None
        if flight is not None:
            self._poller.remove(flight.fd)
            self.pending = flight.batch + self.pending
        self.intake.drop_exchange_connection()
        self.unsure = True

    def finish(self) -> None:
        """Wait for the reply of the call in flight, if any (at stop)."""
        if self.in_flight is not None:
            self.on_reply()

    def take_pending(self) -> list[Settlement]:
        """Every outcome not yet written, now the caller's."""
        pending, self.pending = self.pending, []
        return pending

    def count(
        self, batch: list[Settlement], stale: list[str] | None = None, damaged: list[str] | None = None
    ) -> None:
        """Count what a call wrote; outcomes it dropped (stale by fencing, or for a damaged job hash)
        are counted apart."""
        dropped = {*(stale or ()), *(damaged or ())}
        for item in batch:
            if item.job.id in dropped:
                continue
            name = outcomes.count_name(item.outcome)
            self.counts[name] += 1
            self.metrics.job(name, item.job.priority)
        if stale:
            self.counts["stale"] += len(stale)
            self.log.warning(
                "dropped {} stale outcomes: their claims are no longer this daemon's (reclaimed by "
                "another daemon, or lost with Redis' data): {}",
                len(stale),
                stale[:10],
            )

    def _note_broken(self, broken: set[int]) -> None:
        for index in broken:
            self.log.error(
                "queue key {} is not a list (another application's key?): its jobs are not served until "
                "it is fixed or deleted",
                self.intake.queue_keys[index],
            )

    def _note_damaged(self, damaged: list[str]) -> None:
        if damaged:
            self.counts["dropped"] += len(damaged)
            self.log.error(
                "dropped the outcomes of {} jobs whose hash was deleted or replaced by another type of key "
                "while they ran (nothing written for them; the rest of the batch was): {}",
                len(damaged),
                damaged[:10],
            )

    def _note_missing(self, missing: list[str]) -> None:
        if missing:
            self.counts["dropped"] += len(missing)
            self.log.warning(
                "dropped {} queued ids whose job hash is gone (expired ttl or deleted)", len(missing)
            )
