"""`status`: the overview as a dictionary (for --json) and as a plain-text table."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from adaptive_scheduler import task_profiles
from adaptive_scheduler.redis_url import connect
from adaptive_scheduler.settings import Settings
from adaptive_scheduler.status import gather
from adaptive_scheduler.task_profiles import TaskRow

SHOWN_PROFILES = 10  # the table's share of the task profiles (--json and `tasks` have them all)
STARTED_LEGEND = (
    "started (`rq info`: executing) = running in a slot + claimed: held in a daemon's local queue, "
    "waiting for a slot"
)


def snapshot(settings: Settings, url: str) -> dict[str, Any]:
    """The overview of queues, live daemons, totals and task profiles, as plain data."""
    client = connect(url, socket_timeout=5)
    try:
        return asdict(gather(client, settings.queues, task_profiles.rule_of(settings)))
    finally:
        client.close()


def render(overview: dict[str, Any], now: float) -> str:
    """A table per section, fixed-width, readable in a terminal (`now`: unix s, for the profiles' ages)."""
    lines = ["priority  queue         queued  started  running  claimed  finished  failed  scheduled"]
    for priority, row in overview["queues"].items():
        lines.append(
            f"{priority:<9} {row['queue']:<12} {row['queued']:>7} {row['started']:>8} "
            f"{row['running']:>8} {row['waiting_for_slot']:>8} "
            f"{row['finished']:>9} {row['failed']:>7} {row['scheduled']:>10}"
        )
    lines.append(STARTED_LEGEND)
    lines += _paused(overview)
    totals = overview["totals"]
    lines.append("")
    lines.append(
        "totals: " + (", ".join(f"{k} {v}" for k, v in sorted(totals.items())) or "no jobs settled yet")
    )
    daemons = overview["daemons"]
    lines.append(f"live daemons: {len(daemons)}")
    for daemon in daemons:
        lines.append(f"  {daemon['id']} (pid {daemon['pid']}, {daemon['slot_mode']}): {_activity(daemon)}")
        memory = daemon.get("memory")
        if memory:
            lines.append(
                f"    memory {memory['level']} {memory['pressure_percent']} %: {memory['used_mb']} of "
                f"{memory['budget_mb']} MiB ({memory['budget_source']}); "
                f"daemon RSS {memory['daemon_rss_mb']} MiB, heap {memory.get('daemon_heap_mb')} MiB"
                + _psi(memory)
            )
        for slot in daemon["slots"]:
            doing = (
                f"{slot['task']} job {slot['job_id']} for {slot['running_s']} s" if slot["job_id"] else "idle"
            )
            rss = f", RSS {slot['rss_mb']} MiB" if slot.get("rss_mb") is not None else ""
            rss += f", heap {slot['heap_mb']} MiB" if slot.get("heap_mb") is not None else ""
            name = "P0 lane" if slot.get("p0_lane") else f"slot {slot['index']}"
            lines.append(f"    {name} (pid {slot['pid']}{rss}): {doing}")
        counts = ", ".join(f"{k} {v}" for k, v in sorted(daemon["counts"].items()) if v)
        lines.append(f"    since start: {counts or 'nothing yet'}")
        for task, circuit in sorted(daemon.get("breakers", {}).items()):
            lines.append(f"    circuit breaker {circuit}: {task}")
    lines += _profiles(overview, now)
    return "\n".join(lines)


def _paused(overview: dict[str, Any]) -> list[str]:
    """One line per paused priority: since when, by whom, until when, and which daemons honour it yet."""
    lines = []
    daemons = overview["daemons"]
    for priority, pause in overview.get("paused", {}).items():
        until = f", until {_clock(pause['until'])}" if pause["until"] is not None else ", until resumed"
        behind = [d["id"] for d in daemons if priority not in d.get("paused", [])]
        honour = f"{len(daemons) - len(behind)} of {len(daemons)} live daemons claim none"
        lagging = f" (not yet: {', '.join(behind)})" if behind else ""
        lines.append(
            f"paused: {priority} since {_clock(pause['since'])} by {pause['by']}{until}; {honour}{lagging}"
        )
    return lines


def _clock(unix_s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(unix_s))


def _activity(daemon: dict[str, Any]) -> str:
    """Running jobs apart from claimed ones: both are in RQ's started registry, only the first run."""
    waiting = ", ".join(f"{p} {n}" for p, n in daemon["local"].items() if n) or "none"
    slots = f"running {daemon['running']} of {len(daemon['slots'])} slots"
    return f"{slots}; claimed, waiting for a slot: {waiting}"


def _profiles(overview: dict[str, Any], now: float) -> list[str]:
    """The task profiles with the largest predicted peaks."""
    error = overview.get("task_profiles_error")
    if error:
        return ["", f"task memory profiles: {error}"]
    rows = [TaskRow(**row) for row in overview.get("task_profiles", [])]
    if not rows:
        return ["", f"task memory profiles: {task_profiles.EMPTY}"]
    more = f" (the {SHOWN_PROFILES} largest; `adaptive-scheduler tasks` lists all)"
    head = f"task memory profiles: {len(rows)}" + (more if len(rows) > SHOWN_PROFILES else "")
    return ["", head, *task_profiles.table(rows[:SHOWN_PROFILES], now, indent="  ")]


def _psi(memory: dict[str, Any]) -> str:
    if memory.get("psi_some_avg10") is None:
        return ""
    return f"; PSI avg10 some {memory['psi_some_avg10']} %, full {memory['psi_full_avg10']} %"
