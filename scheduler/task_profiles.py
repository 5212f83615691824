"""The learned memory profiles as people and dashboards see them: `tasks`, `status` and StatsD gauges.

The daemons keep one profile per task in the Redis hash ``asched:profiles`` (see
`adaptive_scheduler.governor.profile_store`). This module turns the stored entries into rows (pure: the raw
values, `now` and the rule in, rows out) and rows into a table; only `read` touches Redis. An entry
that does not decode becomes a row that says why, so one damaged entry never hides the others, and
nothing stored there can make the command fail. Rows come sorted by predicted peak, largest first.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis
from adaptive_scheduler import keys
from adaptive_scheduler.errors import SchedulerError
from adaptive_scheduler.governor.profiles import Profile, Rule, decode, predict

if TYPE_CHECKING:
    from adaptive_scheduler.settings import Settings

MIB = 2**20
TASK_WIDTH = (20, 60)  # the task column: at least, at most (a longer name pushes its own row only)
GAUGE_TASKS = 50  # StatsD: tasks with a gauge, the largest predicted peaks (bounds the series count)
EMPTY = "no task profiles yet (they are learned as jobs end)"
# What `json.loads` and `decode` raise on a stored value: bad JSON or values (ValueError, which
# includes UnicodeDecodeError), a number too large for a float (OverflowError), nesting too deep.
UNREADABLE = (ValueError, OverflowError, RecursionError)


@dataclass(frozen=True, slots=True)
class TaskRow:
    """One task's profile as shown; `error` set (and the numbers None) when its entry is unreadable."""

    task: str
    runs: int | None = None
    predicted_bytes: int | None = None  # None: nothing to predict from (no peak recorded)
    last_peak_bytes: int | None = None
    memory_stops: int | None = None
    updated: float | None = None  # unix s of the last run that ended
    error: str | None = None


def rule_of(settings: Settings) -> Rule:
    """The prediction rule the daemons use, from the settings (margin in %, half-life in s)."""
    return Rule(margin=settings.profile_margin_percent / 100, half_life_s=settings.profile_half_life_s)


def row(task: str, profile: Profile, now: float, rule: Rule) -> TaskRow:
    """A decoded profile as a row."""
    return TaskRow(
        task,
        profile.runs,
        predict(profile, now, rule),
        profile.last_peak if profile.peaks else None,
        profile.memory_stops,
        profile.updated_s,
    )


def rows(entries: Mapping[str, bytes], now: float, rule: Rule) -> list[TaskRow]:
    """Every stored entry (task -> raw value) as a row, largest predicted peak first, unreadable last."""
    found = []
    for task, raw in entries.items():
        try:
            found.append(row(task, decode(raw, now), now, rule))
        except UNREADABLE as exc:
            found.append(TaskRow(task, error=f"unreadable: {_reason(exc)}"))
    return sorted(found, key=_rank)


def _rank(item: TaskRow) -> tuple[bool, int, str]:
    predicted = -1 if item.predicted_bytes is None else item.predicted_bytes
    return item.error is not None, -predicted, item.task


def _reason(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return "not JSON"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return _printable(str(exc))[:120]


def read(client: redis.Redis) -> dict[str, bytes]:
    """Every stored profile entry, task -> raw value.

    Raises:
        SchedulerError: the key holds something other than a hash.
    """
    try:
        entries = client.hgetall(keys.PROFILES)
    except redis.ResponseError as exc:
        if "WRONGTYPE" not in str(exc):
            raise
        kind = client.type(keys.PROFILES).decode()
        raise SchedulerError(
            f"{keys.PROFILES} holds a {kind}, not a hash of task profiles: delete it "
            "(the daemons learn the profiles again as jobs end)"
        ) from None
    return {task.decode(errors="replace"): raw for task, raw in entries.items()}


def gather(client: redis.Redis, rule: Rule, now: float) -> list[TaskRow]:
    """The rows of every stored profile, read now (`read`'s error when the key is not a hash)."""
    return rows(read(client), now, rule)


def table(shown: list[TaskRow], now: float, indent: str = "") -> list[str]:
    """Fixed-width lines, a header first: sizes in MiB, `updated` as an age."""
    width = min(max(TASK_WIDTH[0], *(len(_printable(item.task)) for item in shown)), TASK_WIDTH[1])
    lines = [
        f"{indent}{'task':<{width}}  {'runs':>6}  {'predicted MiB':>13}  {'last peak MiB':>13}  "
        f"{'memory stops':>12}  updated"
    ]
    for item in shown:
        name = _printable(item.task)
        if item.error is not None:
            lines.append(f"{indent}{name:<{width}}  {item.error}")
            continue
        lines.append(
            f"{indent}{name:<{width}}  {item.runs:>6}  {_mib(item.predicted_bytes):>13}  "
            f"{_mib(item.last_peak_bytes):>13}  {item.memory_stops:>12}  {_age(item.updated, now)}"
        )
    return lines


def render(shown: list[TaskRow], now: float) -> str:
    """What `adaptive-scheduler tasks` prints."""
    return "\n".join(table(shown, now)) if shown else EMPTY


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / MIB:.1f}"


def _age(updated: float | None, now: float) -> str:
    """How long ago, in the largest unit that keeps the number readable (clocks may disagree: 0 s)."""
    if updated is None:
        return "-"
    age_s = max(0.0, now - updated)
    for unit, seconds, up_to in (("s", 1, 120), ("min", 60, 7200), ("h", 3600, 172_800)):
        if age_s < up_to:
            return f"{age_s / seconds:.0f} {unit} ago"
    return f"{age_s / 86_400:.0f} d ago"


def _printable(text: str) -> str:
    """`text` safe for a terminal: control characters (from a hash anyone may write) escaped."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def gauges(
    profiles: Mapping[str, Profile], now: float, rule: Rule, segment: Callable[[str], str]
) -> dict[str, float]:
    """StatsD gauges of the `GAUGE_TASKS` profiles with the largest predicted peak.

    `segment` names a task in a metric path (as the `tasks.{task}.run` timer does); where two tasks get
    one name, the larger keeps it. A profile with nothing to predict from has no gauges.
    """
    ranked = sorted(
        (-predicted, task)
        for task, profile in profiles.items()
        if (predicted := predict(profile, now, rule)) is not None
    )
    values: dict[str, float] = {}
    for negated, task in ranked:
        name = segment(task)
        if f"tasks.{name}.memory.predicted_bytes" in values:
            continue
        values[f"tasks.{name}.memory.predicted_bytes"] = -negated
        values[f"tasks.{name}.memory.last_peak_bytes"] = profiles[task].last_peak
        values[f"tasks.{name}.memory.stops"] = profiles[task].memory_stops
        if len(values) == 3 * GAUGE_TASKS:
            break
    return values
