"""The allowlist of functions the daemon may run, and the `@task` registry of names and options.

A job names its function by dotted path (RQ's ``func_name``). Only functions defined in modules the
operator lists in ``allowed_modules`` are ever imported or run (nothing by default); the daemon never
imports a dotted path read from Redis before checking it against that list. `@task` gives a function
a short name and options (heartbeat, preemptible, priority, ...), never permission to run.

Short names are scoped by their dotted paths: two modules may each define a `resize` task, and each is
always found by its path. A short name stands for a task only while one registered task carries it;
`import_allowed` refuses start-up (one line, exit code 2) when tasks of allowed modules share one, since
`enqueue resize` or a periodic job naming it could not say which it means.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from adaptive_scheduler.errors import ConfigError

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
    at_most_once: bool = False  # must never run twice: stopped for memory, it fails instead of rerunning


_BY_PATH: dict[str, TaskInfo] = {}
_BY_NAME: dict[str, dict[str, TaskInfo]] = {}  # short name -> {dotted path: task}: usually one


PRIORITIES = ("P0", "P1", "P2", "P3")


def task(
    name: str | None = None,
    *,
    priority: str | None = None,
    heartbeat: bool = False,
    preemptible: bool = False,
    restartable: bool = False,
    timeout: float | None = None,
    at_most_once: bool = False,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Register a function as an allowlisted task under a short `name` (default: its own name).

    A plain function (no `@task`) that the daemon stops for memory runs again from the start, as after
    a crash; `at_most_once=True` makes such a stop fail the job instead. `priority` (P0..P3) and
    `timeout` (s) are what `adaptive-scheduler enqueue` and periodic jobs use
    unless told otherwise (and the timeout applies to a job whose hash has none); plain RQ producers
    choose their queue and `job_timeout` themselves (RQ writes its 180 s default if they do not).
    """
    if priority is not None and priority not in PRIORITIES:
        raise ValueError(f"task priority must be one of {', '.join(PRIORITIES)}, got {priority!r}")
    if timeout is not None and timeout <= 0:
        raise ValueError(f"task timeout must be > 0 s, got {timeout!r}")

    def register(func: Callable[P, R]) -> Callable[P, R]:
        path = f"{func.__module__}.{func.__qualname__}"
        info = TaskInfo(
            name or func.__name__, path, heartbeat, preemptible, restartable, priority, timeout, at_most_once
        )
        _BY_PATH[info.path] = info  # a clash of short names is reported at start-up, not at import:
        _BY_NAME.setdefault(info.name, {})[info.path] = info  # the application must still import
        return func

    return register


def lookup(name_or_path: str) -> TaskInfo | None:
    """The registered task with this dotted path, else the one task with this short name.

    None when nothing matches, or when several tasks share the short name (see `name_clashes`).
    """
    if (info := _BY_PATH.get(name_or_path)) is not None:
        return info
    named = _BY_NAME.get(name_or_path, {})
    return next(iter(named.values())) if len(named) == 1 else None


def registered_paths() -> tuple[str, ...]:
    """Dotted paths of every registered task, sorted."""
    return tuple(sorted(_BY_PATH))


def name_clashes(infos: Iterable[TaskInfo], allowed_modules: tuple[str, ...]) -> list[str]:
    """One line per short name that several tasks share, at least one of them in an allowed module.

    Each line names every dotted path carrying it and the fix; tasks of other modules alone cannot be
    run, so their clashes are nobody's concern.
    """
    paths_by_name: dict[str, list[str]] = {}
    for info in infos:
        paths_by_name.setdefault(info.name, []).append(info.path)
    lines = []
    for name, paths in sorted(paths_by_name.items()):
        if len(paths) > 1 and any(is_allowed(path, allowed_modules) for path in paths):
            *others, last = sorted(paths)
            lines.append(
                f"task name {name!r} is shared by {', '.join(others)} and {last}: give them distinct "
                "names with @task(name=...)"
            )
    return lines


def import_allowed(allowed_modules: tuple[str, ...]) -> None:
    """Import the operator's job modules (registering their `@task` names and options), then check
    that no two of their tasks share a short name.

    Raises:
        ConfigError: a module cannot be imported, or a short name is ambiguous (one line for all).
    """
    for module in allowed_modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"allowed module {module!r} cannot be imported: {exc}") from None
    clashes = name_clashes(_BY_PATH.values(), allowed_modules)
    if clashes:
        raise ConfigError("; ".join(clashes))


def is_allowed(func_path: str, allowed_modules: tuple[str, ...]) -> bool:
    """True when `func_path` names a function of a module the operator listed in `allowed_modules`.

    Only the operator's list counts: a `@task` of a module outside it is not allowed, even when some
    allowed module imported it (registration gives a task its name and options, never permission).
    """
    module, _, attribute = func_path.rpartition(".")
    return bool(module) and module in allowed_modules and attribute.isidentifier()


def not_defined_there(func_path: str) -> str | None:
    """For a function of an allowed module: why it is not a function that module defines, or None.

    `allowed_modules = ["myapp.jobs"]` allows what myapp.jobs defines, not what it imported:
    `myapp.jobs.system` after `from os import system` is os.system, and `myapp.jobs.os` is a module.
    Only modules already imported are looked at (the daemon imports the allowed modules at start-up);
    None otherwise.
    """
    module_name, _, attribute = func_path.rpartition(".")
    module = sys.modules.get(module_name)
    if module is None:
        return None
    value = getattr(module, attribute, None)
    if not callable(value):
        return f"{module_name} defines no function {attribute!r}"
    defined_in = getattr(value, "__module__", None)
    if isinstance(defined_in, str) and defined_in != module_name:
        return f"it is {defined_in}.{attribute}, imported into an allowed module, not defined there"
    return None


# What a refused module's reason names: the standard library's ways to run code or programs.
_RUNS_PROGRAMS = "builtins.eval, os.system, subprocess.run, pty.spawn, importlib.import_module, ctypes"
# The daemon's own packages: their functions stop, fork and configure the daemon, not user work.
_OWN_PACKAGE = "adaptive_scheduler"  # one import name since the packages were scoped (issue 13)
DEMO_MODULE = "adaptive_scheduler.tasks.demo"


def refused_module_reason(module: str) -> str | None:
    """Why `module` may not be listed in ``allowed_modules`` (one line), or None if it may.

    Every module of Python's standard library is refused, not only the ones that obviously run
    programs: a producer can reach eval, exec, fork or a shell through far more of it than a list
    could keep up with, and no job of a user's application is a standard-library function. The
    daemon's own packages are refused too (their functions stop and configure the daemon), except
    the demo's tasks.
    """
    top = module.partition(".")[0]
    if not all(part.isidentifier() for part in module.split(".")):
        return f"{module!r} is not a module name (dotted Python identifiers, e.g. 'myapp.jobs')"
    if top in sys.stdlib_module_names:
        return (
            f"{module!r} is part of Python's standard library, which runs code and programs for whoever "
            f"names it ({_RUNS_PROGRAMS}): list your application's own job modules only"
        )
    if top == _OWN_PACKAGE and module != DEMO_MODULE:
        return (
            f"{module!r} is adaptive-scheduler's own code, not a job module: list your application's modules"
        )
    return None


def describe_allowed(allowed_modules: tuple[str, ...]) -> str:
    """A short list of what is allowed, for error messages."""
    if not allowed_modules:
        return "nothing; list your job modules in allowed_modules"
    return f"functions of {', '.join(allowed_modules)}"
