"""The explicit task registry: the allowlist of functions the daemon may run.

A job names its function by dotted path (RQ's ``func_name``). Only paths registered here with `@task`,
or functions of modules the operator lists in ``allowed_modules``, are ever imported or run; the daemon
never imports a dotted path read from Redis before checking it against this allowlist.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """What the daemon knows about a registered task without importing anything else."""

    name: str
    path: str
    heartbeat: bool = False  # skipped (not run, counted) once memory pressure is ELEVATED
    preemptible: bool = False  # checkpoints with the SDK: may be stopped and resumed under pressure
    restartable: bool = False  # may be stopped and run again from the start if it saved nothing
    priority: str | None = None  # P0..P3: the queue our producers (CLI, periodic jobs) put it in
    timeout_s: float | None = None  # the job timeout when the job sets none


_BY_PATH: dict[str, TaskInfo] = {}
_BY_NAME: dict[str, TaskInfo] = {}


PRIORITIES = ("P0", "P1", "P2", "P3")


def task(
    name: str | None = None,
    *,
    priority: str | None = None,
    heartbeat: bool = False,
    preemptible: bool = False,
    restartable: bool = False,
    timeout: float | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Register a function as an allowlisted task under a short `name` (default: its own name).

    `priority` (P0..P3) and `timeout` (s) are what `adaptive-scheduler enqueue` and periodic jobs use
    unless told otherwise (and the timeout applies to a job whose hash has none); plain RQ producers
    choose their queue and `job_timeout` themselves (RQ writes its 180 s default if they do not).
    """
    if priority is not None and priority not in PRIORITIES:
        raise ValueError(f"task priority must be one of {', '.join(PRIORITIES)}, got {priority!r}")
    if timeout is not None and timeout <= 0:
        raise ValueError(f"task timeout must be > 0 s, got {timeout!r}")

    def register(func: Callable[P, R]) -> Callable[P, R]:
        path = f"{func.__module__}.{func.__qualname__}"
        info = TaskInfo(name or func.__name__, path, heartbeat, preemptible, restartable, priority, timeout)
        if _BY_NAME.get(info.name, info) != info:
            raise ValueError(f"task name {info.name!r} is registered twice")
        _BY_PATH[info.path] = info
        _BY_NAME[info.name] = info
        return func

    return register


def lookup(name_or_path: str) -> TaskInfo | None:
    """The registered task with this short name or dotted path, if any."""
    return _BY_NAME.get(name_or_path) or _BY_PATH.get(name_or_path)


def registered_paths() -> tuple[str, ...]:
    """Dotted paths of every registered task, sorted."""
    return tuple(sorted(_BY_PATH))


def is_allowed(func_path: str, allowed_modules: tuple[str, ...]) -> bool:
    """True when `func_path` is a registered task or a function of an allowed module."""
    if func_path in _BY_PATH:
        return True
    module, _, attribute = func_path.rpartition(".")
    return bool(module) and module in allowed_modules and attribute.isidentifier()


def imported_from_elsewhere(func_path: str) -> str | None:
    """For a function of an allowed module: where it is really defined, when that is outside the module.

    `allowed_modules = ["myapp.jobs"]` allows what myapp.jobs defines (and its submodules), not what it
    imported: `myapp.jobs.system` after `from os import system` is os.system. Only modules already
    imported are looked at (the daemon imports the allowed modules at start-up); None otherwise.
    """
    module_name, _, attribute = func_path.rpartition(".")
    module = sys.modules.get(module_name)
    if module is None or func_path in _BY_PATH:
        return None
    defined_in = getattr(getattr(module, attribute, None), "__module__", None)
    if (
        not isinstance(defined_in, str)
        or defined_in == module_name
        or defined_in.startswith(module_name + ".")
    ):
        return None
    return f"{defined_in}.{attribute}"


def describe_allowed(allowed_modules: tuple[str, ...]) -> str:
    """A short list of what is allowed, for error messages."""
    modules = [f"{module}.*" for module in allowed_modules]
    return ", ".join([*registered_paths(), *modules])
