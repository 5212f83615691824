"""The quick start's demo workload: a few jobs of each priority, through plain RQ like any producer."""

from __future__ import annotations

import redis
from loguru import logger
from rq import Queue
from rq.serializers import JSONSerializer

from settings import Settings

DEMO = (
    (3, "tasks.builtin.heartbeat", ()),
    (2, "tasks.builtin.sleep", (0.2,)),
    (2, "tasks.builtin.add", (2, 3)),
    (1, "tasks.builtin.spin", (0.1,)),
    (1, "tasks.builtin.echo", ({"hello": "world"},)),
    (0, "tasks.builtin.add", (40, 2)),
    (2, "tasks.builtin.fail", ("a demo job that fails on purpose",)),
    (3, "os.system", ("echo this never runs",)),
    (0, "tasks.builtin.exit_process", (3,)),
    (1, "tasks.builtin.sleep", (0.1,)),
)


def enqueue_demo(client: redis.Redis, settings: Settings) -> list[str]:
    """Enqueue the demo jobs (lowest priority first, so the P0 ones visibly overtake); returns ids."""
    ids = []
    for priority, func_path, args in sorted(DEMO, key=lambda item: -item[0]):
        queue = Queue(settings.queues[priority], connection=client, serializer=JSONSerializer)
        ids.append(queue.enqueue_call(func_path, args=args).id)
    logger.info("demo: enqueued {} jobs (P3 first; P0 runs first; 3 of them fail on purpose)", len(ids))
    return ids
