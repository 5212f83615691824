"""The quick start's demo tasks: allowlisted only while `adaptive-scheduler run --demo` runs.

Nothing imports this module unless the demo runs (it is then added to ``allowed_modules``), so a
producer cannot run these functions on a daemon the operator started without ``--demo``.
"""

from __future__ import annotations

import os
import time

from adaptive_scheduler.tasks.registry import task


@task(priority="P3", heartbeat=True)
def heartbeat() -> float:
    """A periodic liveness job: returns the time it ran."""
    return time.time()


@task()
def add(a: float, b: float) -> float:
    """Returns a + b: a job with a result to read back."""
    return a + b


@task()
def echo(value: object) -> object:
    """Returns its argument unchanged."""
    return value


@task()
def sleep(seconds: float) -> float:
    """Sleeps, then returns how long it slept."""
    time.sleep(seconds)
    return seconds


@task()
def spin(seconds: float) -> int:
    """Burns CPU for `seconds` and returns how many loop turns it made."""
    deadline = time.monotonic() + seconds
    turns = 0
    while time.monotonic() < deadline:
        turns += 1
    return turns


@task()
def fail(message: str = "failed on purpose") -> None:
    """Raises RuntimeError(message): a job that fails normally."""
    raise RuntimeError(message)


@task()
def exit_process(code: int = 3) -> None:
    """Ends its own process with os._exit: a job that kills its slot (the daemon replaces the slot)."""
    os._exit(code)
