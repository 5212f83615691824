"""Enqueueing from the command line, with plain RQ and the configured serializer, as any producer would."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from adaptive_scheduler import tasks
from adaptive_scheduler.errors import RedisUnavailable, UsageError
from adaptive_scheduler.model import Priority
from adaptive_scheduler.payload import rq_serializer
from adaptive_scheduler.redis_server import SOCKET_NAME
from adaptive_scheduler.redis_url import connect
from adaptive_scheduler.settings import Settings
from rq import Queue


def resolve_redis_url(settings: Settings) -> str:
    """The configured Redis, else the embedded one a running daemon started in `state_dir`.

    Raises:
        RedisUnavailable: none is configured and no daemon's embedded Redis is running.
    """
    configured = settings.redis_url_text()
    if configured:
        return configured
    socket = Path(settings.state_dir).resolve() / SOCKET_NAME
    if not socket.exists():
        raise RedisUnavailable(
            f"no Redis configured and no embedded Redis running at {socket}: start the daemon "
            "(`adaptive-scheduler run`) or set ASCHED_REDIS_URL"
        )
    return f"unix://{socket}"


def enqueue(
    settings: Settings,
    url: str,
    task: str,
    args_json: str,
    kwargs_json: str,
    priority_text: str | None,
    timeout_s: int | None,
) -> str:
    """Enqueue one job; returns its id.

    Raises:
        UsageError: unknown task or priority, or arguments that are not JSON.
        ConfigError: an allowed module does not import, or two of their tasks share a short name.
    """
    tasks.import_allowed(settings.allowed_modules)
    info = tasks.lookup(task)
    func_path = info.path if info else task
    if not tasks.is_allowed(func_path, settings.allowed_modules):
        raise UsageError(
            f"task {task!r} is not allowed (allowed: {tasks.describe_allowed(settings.allowed_modules)})"
        )
    try:
        priority = Priority.parse(priority_text or (info.priority if info else None) or "P2")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    args = _json(args_json, list, "args")
    kwargs = _json(kwargs_json, dict, "--kwargs")
    client = connect(url)
    queue = Queue(settings.queues[priority], connection=client, serializer=rq_serializer(settings.serializer))
    timeout = timeout_s or (info.timeout_s if info else None)  # RQ writes its queue default otherwise
    job = queue.enqueue_call(func_path, args=args, kwargs=kwargs, timeout=timeout)
    return str(job.id)


def _json(text: str, kind: type, what: str) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{what} must be JSON ({exc}); e.g. '[1, 2]' or '{{\"x\": 1}}'") from None
    if not isinstance(value, kind):
        raise UsageError(f"{what} must be a JSON {'list' if kind is list else 'object'}, got {text!r}")
    return value
