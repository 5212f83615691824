"""Job functions that the peer job systems run for ``bench.peers``.

The functions are plain and importable by dotted path, so RQ runs them as they are; Celery and
Dramatiq get thin wrappers, built only when their worker asks for them (``celery_app`` through the
module ``__getattr__``, ``setup_dramatiq`` through the dramatiq CLI). Importing this module therefore
never imports celery or dramatiq, which keeps an RQ worker's memory and per-fork import cost honest.
The jobs reach Redis through the URL in ``PEER_BENCH_REDIS_URL``; the no-op job touches nothing,
so the drain counts only the peer's own Redis commands.
"""

from __future__ import annotations

import os
import time
from functools import lru_cache
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import redis
from rq import get_current_job

if TYPE_CHECKING:
    from celery import Celery
    from dramatiq.brokers.redis import RedisBroker

REDIS_URL_ENV = "PEER_BENCH_REDIS_URL"
QUEUE = "peerbench"
LATENCY_KEY = "peerbench:latency"
SENTINEL_KEY = "peerbench:sentinel"
NOOP = "peer_noop"
PROBE = "peer_probe"
SENTINEL = "peer_sentinel"
BURN = "peer_burn"
BURN_PATH = "bench.peer_jobs.burn"  # dotted paths, as an RQ producer names them
NOOP_PATH = "bench.peer_jobs.noop"
STAMP_URL_ENV = "PEER_BENCH_STAMP_URL"
STAMPS_KEY = "peerbench:stamps"


def noop() -> None:
    """Do nothing: the drain measures the job system, not the job."""


def probe(enqueued_at: float) -> None:
    """Push ``"<enqueued_at> <started_at>"`` (wall-clock seconds) to ``LATENCY_KEY``.

    ``started_at`` is read on the first line, so connecting to Redis here does not count as latency.
    """
    started_at = time.time()
    _client().rpush(LATENCY_KEY, f"{enqueued_at!r} {started_at!r}")


def burn(seconds: float, sent_at: float, priority: int, tag: str, called_at: float = 0.0) -> None:
    """Read the clock, burn ``seconds`` of CPU, then push
    ``"<priority> <sent_at> <started_at> <tag> <called_at> <RQ job id or -> <pid>"``.

    The load benchmarks' job (``bench.load``, ``bench.burst``): ``sent_at`` is the producer's scheduled
    send time, so start minus ``sent_at`` is the open-loop latency; ``called_at`` is when the producer
    actually built the send (later, if it fell behind), which tells the producer's delay apart from
    the job system's. CPU time, not wall time, is burnt, so a job costs the same on a busy machine.
    The stamp goes to the Redis in ``PEER_BENCH_STAMP_URL`` (a server of its own), so it adds nothing
    to the job Redis's load or its command counts. The RQ job id (ours; "-" under Celery and Dramatiq)
    and the process that ran it let a job stamped twice be looked up (`bench.openloop.twice_detail`).
    """
    started_at = time.time()
    deadline = time.process_time() + seconds
    while time.process_time() < deadline:
        pass
    job = get_current_job()
    job_id = job.id if job is not None else "-"
    stamp = f"{priority} {sent_at!r} {started_at!r} {tag} {called_at!r} {job_id} {os.getpid()}"
    _stamp_client().rpush(STAMPS_KEY, stamp)


def sentinel() -> None:
    """Set ``SENTINEL_KEY``: enqueued last, it tells the harness a FIFO queue has been worked off."""
    _client().set(SENTINEL_KEY, "1")


@lru_cache(maxsize=1)
def _client() -> redis.Redis:
    """One client per process, created on first use (after fork, never inherited)."""
    return redis.Redis.from_url(os.environ[REDIS_URL_ENV])


@lru_cache(maxsize=1)
def _stamp_client() -> redis.Redis:
    """The stamp Redis (``PEER_BENCH_STAMP_URL``, else the job Redis), one client per process."""
    return redis.Redis.from_url(os.environ.get(STAMP_URL_ENV) or os.environ[REDIS_URL_ENV])


def kombu_url(redis_url: str) -> str:
    """Translate a redis-py URL to kombu's form: ``unix://p?db=N`` becomes ``redis+socket://p?virtual_host=N``."""
    parts = urlsplit(redis_url)
    if parts.scheme != "unix":
        return redis_url
    db = parse_qs(parts.query).get("db", ["0"])[0]
    return f"redis+socket://{parts.path}?virtual_host={db}"


def make_celery_app(redis_url: str) -> Celery:
    """Build a Celery app on ``redis_url`` with the jobs as tasks; results are never stored."""
    from celery import Celery

    app = Celery("peerbench", broker=kombu_url(redis_url), set_as_current=False)
    app.conf.update(
        task_default_queue=QUEUE,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
    )
    for name, func in ((NOOP, noop), (PROBE, probe), (SENTINEL, sentinel), (BURN, burn)):
        app.task(func, name=name, ignore_result=True)
    return app


def make_dramatiq_broker(redis_url: str) -> RedisBroker:
    """Build a Dramatiq Redis broker on ``redis_url`` (default middleware) with the jobs as actors."""
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=redis_url)  # type: ignore[no-untyped-call]
    dramatiq.actor(actor_name=NOOP, queue_name=QUEUE, broker=broker)(noop)
    dramatiq.actor(actor_name=PROBE, queue_name=QUEUE, broker=broker)(probe)
    dramatiq.actor(actor_name=SENTINEL, queue_name=QUEUE, broker=broker)(sentinel)
    dramatiq.actor(actor_name=BURN, queue_name=QUEUE, broker=broker)(burn)
    return broker


def setup_dramatiq() -> None:
    """Install the broker for the dramatiq CLI (``dramatiq bench.peer_jobs:setup_dramatiq``)."""
    import dramatiq

    dramatiq.set_broker(make_dramatiq_broker(os.environ[REDIS_URL_ENV]))


@lru_cache(maxsize=1)
def _celery_app() -> Celery:
    return make_celery_app(os.environ[REDIS_URL_ENV])


def __getattr__(name: str) -> object:
    """Build ``celery_app`` on first access, for ``celery -A bench.peer_jobs:celery_app``."""
    if name == "celery_app":
        return _celery_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
