"""Moving jobs between Redis and the daemon: exchange (settle + claim), recover, promote.

Each tick costs one Lua call (`exchange.lua`) for the whole batch, so the Redis cost per job stays a
handful of commands (RQ's worker pays ~50). Scripts are atomic: a kill -9 of the daemon at any instant
leaves every job in its queue, settled, or in a started registry under this daemon's execution id,
recovered by any daemon once this one's lease expires.
"""

from __future__ import annotations

import base64
import math
import time
import uuid
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.resources import files
from typing import TYPE_CHECKING, Any

import redis
from adaptive_scheduler import keys, rq_worker
from adaptive_scheduler.model import ClaimedJob, Outcome, Priority, Settlement
from adaptive_scheduler.payload import FIELDS
from adaptive_scheduler.rq_worker import Identity, Registration
from adaptive_scheduler.rqtime import rq_timestamp
from adaptive_scheduler.scriptline import ScriptLine
from loguru import logger
from redis.exceptions import NoScriptError

if TYPE_CHECKING:
    from adaptive_scheduler.settings import Settings

RENEW_SLACK_S = 1.0  # reclaim.lua: Redis up for a lease plus this, so that every live daemon renewed
LEASE_SLACK_S = 60  # RQ's own cleanup must not fail our running jobs: keep their score in the future
CLAIM_STRIDE = 3 + len(FIELDS)
PROMOTE_BATCH = 1000  # scheduled jobs moved per call at most
PRIORITIES = tuple(Priority)  # by index: Priority(i) is slower, and this runs per claimed job
NOT_OURS = b"!"  # the claim's execution id for a queue entry that is not an RQ job (exchange.lua)


def _source(name: str) -> str:
    return files("adaptive_scheduler.lua").joinpath(f"{name}.lua").read_text()


def _lua_list(texts: Iterable[str]) -> str:
    """Lua literals for `texts`, comma-separated (every byte outside printable ASCII escaped)."""
    return ", ".join('"' + "".join(_lua_char(c) for c in text.encode()) + '"' for text in texts)


def _lua_char(byte: int) -> str:
    return chr(byte) if 32 <= byte < 127 and chr(byte) not in '"\\' else f"\\{byte:03d}"


@dataclass(frozen=True, slots=True)
class Chores:
    """What one housekeeping round trip found."""

    depths: list[int]  # jobs waiting per priority, P0 first; -1 for a queue key that is not a list
    recovered: list[str]  # ids of dead daemons' jobs put back into their queues
    promoted: int  # scheduled jobs moved into their queues
    lease: int = 1  # renew.lua's answer: 1 renewed, 2 taken again after a lapse, 0 lost
    pauses: dict[bytes, bytes] = field(default_factory=dict)  # asched:paused, as read (`controls`)


class Intake:
    """Settles, claims and recovers jobs for one daemon (`daemon_id`)."""

    def __init__(self, client: redis.Redis, settings: Settings, daemon_id: str) -> None:
        self.client = client
        self.settings = settings
        self.daemon_id = daemon_id
        self.worker_name = f"adaptive-scheduler:{daemon_id}"
        self.worker = self._registration()
        self.lease_token = uuid.uuid4().hex  # renewal checks it: a lease is this daemon's, not any SET's
        self.reclaim_after = 0.0  # monotonic s: no reclaiming of peers before (set after an outage)
        self._next_execution = 0
        self.queue_keys = [keys.queue(name) for name in settings.queues]
        self._started_keys = [keys.started(name) for name in settings.queues]
        self._exchange_keys = [
            key
            for name in settings.queues
            for key in (
                keys.queue(name),
                keys.started(name),
                keys.finished(name),
                keys.failed(name),
                keys.scheduled(name),
                keys.canceled(name),
            )
        ] + [keys.SHED, keys.SKIPPED, keys.FOREIGN]
        self._timeouts = [int(settings.default_job_timeout_s), int(settings.lease_ttl_s + LEASE_SLACK_S)]
        source = _source("exchange").replace("__FIELDS__", _lua_list(FIELDS[1:]))
        source = source.replace("__FOREIGN_KEPT__", str(keys.FOREIGN_KEPT))
        source = source.replace("__SERVER_TIME__", _source("server_time"))
        # a mark lives for two housekeeping rounds at least (`Arrivals.check_parked` looks twice)
        parked_ttl_s = int(2 * settings.lease_ttl_s) + 10
        source = source.replace("__PARKED__", keys.PARKED).replace("__PARKED_TTL__", str(parked_ttl_s))
        self._exchange = ScriptLine(
            client,
            source.replace("__KEYS__", _lua_list(self._exchange_keys)),
            settings.replica_acks,
            settings.replica_ack_timeout_ms,
        )
        self.unreplicated = 0  # calls not acknowledged by `replica_acks` replicas in time
        self._unreplicated_said = 0.0
        self._reclaim = client.register_script(_source("reclaim"))
        self._renew = client.register_script(_source("renew"))
        self._reclaim_keys = self.queue_keys + self._started_keys + [keys.DAEMONS]
        self._promote = client.register_script(_source("promote"))
        self._promote_keys = [keys.scheduled(name) for name in settings.queues] + self.queue_keys

    def _registration(self) -> Registration:
        identity = Identity.here(self.worker_name, self.settings.queues, time.time())
        return Registration(identity, self.settings.lease_ttl_s)

    def announce(self) -> None:
        """Take this daemon's lease (with its token) and register the queues and this daemon as a worker
        with RQ (`rq info`); then drop the registrations that dead workers left."""
        with self.client.pipeline(transaction=False) as pipe:
            self._announce(pipe)
            pipe.execute()
        rq_worker.prune(self.client, self.settings.queues)

    def _announce(self, pipe: redis.client.Pipeline, state: str = rq_worker.STARTED) -> None:
        pipe.set(self._lease_key, self.lease_token, px=self._lease_ms)
        pipe.sadd(keys.DAEMONS, self.daemon_id)
        pipe.sadd(keys.RQ_QUEUES, *self.queue_keys)
        self.worker.register(pipe, time.time(), state)

    def rejoin(self, daemon_id: str) -> None:
        """Come back under a new id (this one's lease was lost): new lease, new execution ids, and a new
        RQ worker in place of the old one (in one round trip: `rq info` never shows both)."""
        retired, retired_id = self.worker, self.daemon_id
        self.daemon_id = daemon_id
        self.worker_name = f"adaptive-scheduler:{daemon_id}"
        self.worker = self._registration()
        self.lease_token = uuid.uuid4().hex
        with self.client.pipeline(transaction=False) as pipe:
            retired.unregister(pipe)
            pipe.hdel(keys.LEVELS, retired_id)
            self._announce(pipe, rq_worker.IDLE)  # the daemon stopped every job before it rejoins
            pipe.execute()

    @property
    def _lease_key(self) -> str:
        return keys.daemon_lease(self.daemon_id)

    @property
    def _lease_ms(self) -> int:
        return int(self.settings.lease_ttl_s * 1000)

    def _renew_args(self) -> tuple[list[str], list[str | int]]:
        return [self._lease_key, keys.DAEMONS], [self.lease_token, self._lease_ms, self.daemon_id]

    def renew(self) -> int:
        """Renew the lease now (see renew.lua): 1 renewed, 2 taken again after a lapse, 0 lost."""
        lease_keys, args = self._renew_args()
        return int(self._renew(keys=lease_keys, args=args))

    def housekeeping(self, now: float, also: Callable[[redis.Redis], None]) -> Chores:
        """Renew the lease, read the queue depths and the pauses, put back dead daemons' claims, move
        due scheduled jobs and whatever `also` adds to the pipeline, in one round trip: the daemon's loop
        waits for it, and so would a P0 job arriving meanwhile."""
        lease_keys, renew_args = self._renew_args()
        reclaim_args = self._dead_args()
        with self.client.pipeline(transaction=False) as pipe:
            pipe.evalsha(self._renew.sha, len(lease_keys), *lease_keys, *renew_args)
            pipe.sadd(keys.RQ_QUEUES, *self.queue_keys)
            pipe.evalsha(self._reclaim.sha, len(self._reclaim_keys), *self._reclaim_keys, *reclaim_args)
            pipe.evalsha(self._promote.sha, len(self._promote_keys), *self._promote_keys, now, PROMOTE_BATCH)
            for key in self.queue_keys:
                pipe.llen(key)
            pipe.hgetall(keys.PAUSED)
            also(pipe)
            replies = pipe.execute(raise_on_error=False)
        n = len(self.queue_keys)
        (lease, _, recovered, promoted), depth_replies = replies[:4], replies[4 : 4 + n]
        pauses = replies[4 + n] if isinstance(replies[4 + n], dict) else {}  # not a hash: nothing paused
        for reply in (*replies[:4], *replies[5 + n :]):  # a depth's error means "not a list": -1
            if isinstance(reply, Exception) and not isinstance(reply, NoScriptError):
                raise reply
        if any(isinstance(reply, NoScriptError) for reply in (lease, recovered, promoted)):
            # Redis lost its scripts (a restart, SCRIPT FLUSH): the plain calls load them again
            lease, recovered_ids, moved = self.renew(), self.recover(), self.promote_scheduled(now)
            return Chores(self.depths(), recovered_ids, moved, lease, pauses)  # depths after the moves
        found = [raw.decode() for raw in recovered]
        return Chores(_depths(depth_replies), found, int(promoted), int(lease), pauses)

    def _dead_args(self) -> list[str | int]:
        """reclaim.lua's arguments in "dead" mode; after this daemon's own outage, an uptime no Redis
        has, so that it reclaims nothing until its peers have had a lease's time to renew theirs."""
        wait = time.monotonic() < self.reclaim_after
        uptime_s = 2**62 if wait else math.ceil(self.settings.lease_ttl_s + RENEW_SLACK_S)
        return ["dead", keys.daemon_lease(""), uptime_s]

    def release_lease(self) -> None:
        """Drop the lease, the published status and the RQ worker on a clean stop (after everything was
        settled)."""
        with self.client.pipeline(transaction=False) as pipe:
            pipe.delete(self._lease_key, keys.daemon_status(self.daemon_id))
            pipe.hdel(keys.LEVELS, self.daemon_id)
            self.worker.unregister(pipe)
            pipe.execute()
        self._exchange.close()

    def exchange_address(self) -> tuple[str, int] | None:
        """The server the exchange's connection reached (None while not connected)."""
        return self._exchange.address()

    def drop_exchange_connection(self) -> None:
        """Disconnect the exchange's connection (abandoning its call in flight); the next call reconnects."""
        self._exchange.close()

    def exchange(
        self,
        settlements: list[Settlement],
        claim: int,
        now: float,
        queues: int = 4,
        paused: frozenset[int] = frozenset(),
    ) -> Claim:
        """Write `settlements`, then claim up to `claim` jobs, P0 first, in one atomic call."""
        self.send_exchange(settlements, claim, now, queues, paused)
        return self.receive_exchange()

    def send_exchange(
        self,
        settlements: list[Settlement],
        claim: int,
        now: float,
        queues: int = 4,
        paused: frozenset[int] = frozenset(),
    ) -> int:
        """Start an exchange; returns the descriptor to poll for its reply (`receive_exchange`).

        `queues` bounds the claim to the first (most urgent) queues: 4 all, 1 P0 only; of those, the
        `paused` ones (priority indexes) are not claimed from.
        """
        return self._exchange.send(self._exchange_args(settlements, claim, now, queues, paused))

    def parked_claim(self, want: int, queues: int, paused: frozenset[int]) -> ParkedClaim:
        """A claim of up to `want` jobs, to be parked behind a watch (`waker.Waker.arm`): it runs when a
        job lands, by Redis's clock, under this daemon's lease as it is then (`parse_claim` reads it)."""
        first = self._next_execution  # the ids its claims may take: see exchange.lua
        args = self._exchange_args([], want, 0, queues, paused)
        executions = [f"{self.daemon_id}.{counter}" for counter in range(first, first + want)]
        return ParkedClaim(self._exchange.command(args), executions)

    def parked_ran(self, executions: list[str]) -> set[str]:
        """Which of these parked claims' executions ran (their mark is there: `exchange.lua`)."""
        with self.client.pipeline(transaction=False) as pipe:
            for execution in executions:
                pipe.exists(keys.PARKED + execution)
            return {execution for execution, found in zip(executions, pipe.execute(), strict=True) if found}

    def _exchange_args(
        self, settlements: list[Settlement], claim: int, now: float, queues: int, paused: frozenset[int]
    ) -> list[str | int | float | bytes]:
        """exchange.lua's arguments (`now` 0: Redis's clock); reserves the `claim` execution ids."""
        first, self._next_execution = self._next_execution, self._next_execution + claim
        prefix = f"{self.daemon_id}."
        args: list[str | int | float | bytes] = [
            now,
            rq_timestamp(now) if now else "",
            self.worker_name,
            claim,
            prefix,
            first,
        ]
        args.extend(self._timeouts)
        args.append(len(settlements))
        for item in settlements:
            args.extend(_settle_args(item, self.settings.default_result_ttl_s))
        served = "".join(str(i) for i in range(queues) if i not in paused)  # exchange.lua: "0123" all
        args.extend((served, self._lease_key, self.lease_token))
        return args

    def receive_exchange(self) -> Claim:
        """The outcome of the exchange in flight."""
        reply = self._exchange.receive()
        if self._exchange.acked < self._exchange.replica_acks:
            self._note_unreplicated()
        return self.parse_claim(reply)

    def parse_claim(self, reply: list[Any]) -> Claim:
        """An exchange.lua reply (the exchange's, or a parked claim's)."""
        with_dependents, flat, emptied, stale, damaged = reply
        for raw_id in with_dependents:
            self._enqueue_dependents(raw_id.decode())
        claimed, missing = _parse_claim(flat)
        empty = {i for i, flag in enumerate(emptied) if flag == ord("1")}
        broken = {i for i, flag in enumerate(emptied) if flag == ord("2")}
        stale_ids = [raw.decode(errors="replace") for raw in stale]
        damaged_ids = [raw.decode(errors="replace") for raw in damaged]
        return Claim(claimed, missing, empty, broken, stale_ids, damaged_ids)

    def _note_unreplicated(self) -> None:
        """A call that fewer replicas than `replica_acks` acknowledged in time: counted, said every 10 s."""
        self.unreplicated += 1
        if time.monotonic() - self._unreplicated_said >= 10.0:
            self._unreplicated_said = time.monotonic()
            logger.warning(
                "{} claim-and-settle calls so far not acknowledged by {} replicas within {} ms: a failover "
                "now could lose their writes",
                self.unreplicated,
                self._exchange.replica_acks,
                self.settings.replica_ack_timeout_ms,
            )

    def recover(self) -> list[str]:
        """Put back the claims of daemons whose lease expired while Redis was up; returns their ids."""
        return self._reclaim_where(self._dead_args())

    def reconcile(self, held_executions: list[str]) -> list[str]:
        """Put back this daemon's claims it does not hold (a reply lost with a dropped connection)."""
        return self._reclaim_where(["mine", self.daemon_id, *held_executions])

    def _reclaim_where(self, args: list[str | int]) -> list[str]:
        recovered = self._reclaim(keys=self._reclaim_keys, args=args)
        return [raw.decode() for raw in recovered]

    def promote_scheduled(self, now: float) -> int:
        """Move due scheduled jobs (enqueue_at/enqueue_in, retry intervals) into their queues."""
        return int(self._promote(keys=self._promote_keys, args=[now, PROMOTE_BATCH]))

    def depths(self) -> list[int]:
        """Jobs waiting in Redis per priority, P0 first; -1 for a queue whose key is not a list."""
        with self.client.pipeline(transaction=False) as pipe:
            for key in self.queue_keys:
                pipe.llen(key)
            return _depths(pipe.execute(raise_on_error=False))

    def _enqueue_dependents(self, job_id: str) -> None:
        """Rare path: let RQ's own code release the jobs that waited for this one."""
        from rq import Queue  # imported here: RQ is ~3 MB the daemon otherwise never needs
        from rq.job import Job
        from rq.serializers import JSONSerializer

        try:
            job = Job.fetch(job_id, connection=self.client, serializer=JSONSerializer)
            Queue(job.origin, connection=self.client, serializer=JSONSerializer).enqueue_dependents(job)
        except Exception as exc:  # the parent's outcome is written; a dependent stays deferred
            logger.bind(job_id=job_id).warning("could not enqueue dependents: {}", exc)


@dataclass(frozen=True, slots=True)
class ParkedClaim:
    """A claim sent behind a watch: its encoded call, and the execution ids it may give its jobs (held
    by this daemon until the claim's reply is read or lost: `reconcile` must not put them back)."""

    command: bytes
    executions: list[str]


@dataclass(frozen=True, slots=True)
class Claim:
    """What one exchange claimed."""

    jobs: list[ClaimedJob]
    missing: list[str]  # ids whose job hash was gone (expired ttl, deleted): dropped, as RQ does
    emptied: set[int]  # priority indexes of the queues this claim found empty
    broken: set[int] = field(default_factory=set)  # ... whose key is not a list: not served
    stale: list[str] = field(default_factory=list)  # ids whose outcome was dropped: claim no longer ours
    damaged: list[str] = field(default_factory=list)  # ... dropped: job hash gone or not a hash


def _parse_claim(flat: list[bytes | int]) -> tuple[list[ClaimedJob], list[str]]:
    claimed: list[ClaimedJob] = []
    missing: list[str] = []
    foreign: list[str] = []
    for i in range(0, len(flat), CLAIM_STRIDE):
        raw_id, execution = flat[i + 1], flat[i + 2]
        if execution == NOT_OURS:  # any bytes at all: shown escaped, never decoded strictly
            foreign.append(repr(raw_id[:80]) + ("..." if len(raw_id) > 80 else ""))  # type: ignore[index, arg-type]
            missing.append(raw_id.decode("utf-8", "backslashreplace"))  # type: ignore[union-attr]
            continue
        job_id = raw_id.decode()  # type: ignore[union-attr]  # an RQ job id: [A-Za-z0-9_-]+
        if not execution:
            missing.append(job_id)
            continue
        fields = dict(zip(FIELDS, flat[i + 3 : i + CLAIM_STRIDE], strict=True))
        claimed.append(ClaimedJob(job_id, PRIORITIES[flat[i]], execution.decode(), fields))  # type: ignore[union-attr, index, arg-type]
    if foreign:
        logger.warning(
            "moved {} queue entries that are not RQ jobs (an id outside [A-Za-z0-9_-], or a key that is "
            "not a job hash; the key is left untouched) to {}: {}",
            len(foreign),
            keys.FOREIGN,
            ", ".join(foreign[:10]),
        )
    return claimed, missing


def _settle_args(item: Settlement, skipped_ttl_s: int = 0) -> list[str | int | float | bytes]:
    job, options, outcome = item.job, item.options, item.outcome
    ttl = skipped_ttl_s if outcome is Outcome.SKIPPED else 0  # a skipped job expires like a result
    if options is not None:
        ttl = options.result_ttl_s if outcome is Outcome.FINISHED else options.failure_ttl_s
    payload = b""
    exc_info: str | bytes = b""
    if outcome is Outcome.FINISHED and item.result is not None:
        payload = base64.b64encode(item.result)
    elif outcome in (Outcome.SKIPPED, Outcome.SHED, Outcome.DEFERRED, Outcome.STOPPED):
        exc_info = item.reason  # plain text: it is our own field, not RQ's
    elif item.reason:
        exc_info = zlib.compress(item.reason.encode("utf-8", "replace"))
        payload = base64.b64encode(exc_info)
    started, ended = item.started_at, item.ended_at
    packed = (
        f"{outcome.value}\x1f{job.priority:d}\x1f{job.execution_id}\x1f"
        f"{rq_timestamp(started) if started else ''}\x1f{rq_timestamp(ended) if ended else ''}\x1f"
        f"{started!r}\x1f{ended!r}\x1f{ttl}"
    )
    return [packed, job.id, payload, exc_info, item.extra]


def _depths(replies: list[object]) -> list[int]:
    return [-1 if isinstance(n, redis.ResponseError) else int(n) for n in replies]  # type: ignore[call-overload]
