"""The `pause` and `resume` commands: set the flag in Redis (`controls`), then wait until every live
daemon shows it in its published status, so that when `pause` returns no daemon claims that priority.

A daemon applies a change within milliseconds (it is subscribed to `asched:control`) and republishes its
status at its next tick; one that misses the message applies it at its next housekeeping round (at most
a second). A daemon that has not shown the change after `ACK_WAIT_S` is named, and the command exits 1:
the flag is set all the same, and that daemon honours it once it reads it.
"""

from __future__ import annotations

import getpass
import json
import re
import socket
import time
from collections.abc import Callable, Sequence

import redis
from adaptive_scheduler import controls, keys
from adaptive_scheduler.errors import UsageError
from adaptive_scheduler.model import Priority

ACK_WAIT_S = 3.0
UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
P0_WARNING = (
    "warning: pausing P0 holds critical jobs too (memory pressure never stops P0 from being claimed); "
    "`adaptive-scheduler resume P0` lets them run"
)


def parse_priorities(texts: Sequence[str], all_: bool) -> list[Priority]:
    """The priorities named (`p2`, `P2` or `2`), or all four with `--all`.

    Raises:
        UsageError: none named and no --all, both, or a name that is not a priority.
    """
    if bool(texts) == all_:
        raise UsageError("name priorities (P0..P3, e.g. `P2 P3`) or give --all (not both)")
    if all_:
        return list(Priority)
    try:
        return sorted({Priority.parse(text) for text in texts})
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def parse_duration(text: str) -> float:
    """`90`, `90s`, `10m`, `2h`, `1d` -> seconds (positive).

    Raises:
        ValueError: anything else.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text.lower())
    seconds = float(match[1]) * UNITS[match[2]] if match else 0.0
    if seconds <= 0:
        raise ValueError(f"needs a positive duration like 90s, 10m, 2h or 1d, got {text!r}")
    return seconds


def operator() -> str:
    """Who paused: user@host, shown by `status`."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "?"
    return f"{user}@{socket.gethostname()}"


def pause(
    client: redis.Redis, priorities: list[Priority], for_s: float | None, say: Callable[[str], None]
) -> bool:
    """Pause `priorities`; True once every live daemon shows them paused (within ACK_WAIT_S)."""
    now = time.time()
    controls.pause(client, priorities, now, for_s, operator())
    names = " ".join(p.name for p in priorities)
    until = f" until {time.strftime('%H:%M:%S UTC', time.gmtime(now + for_s))}" if for_s else ""
    say(f"paused {names}{until}: their jobs stay queued in Redis; jobs already running finish")
    return _wait(client, lambda shown: all(p.name in shown for p in priorities), say)


def resume(client: redis.Redis, priorities: list[Priority], say: Callable[[str], None]) -> bool:
    """Resume `priorities`; True once no live daemon shows them paused (within ACK_WAIT_S)."""
    controls.resume(client, priorities)
    say(f"resumed {' '.join(p.name for p in priorities)}")
    return _wait(client, lambda shown: not any(p.name in shown for p in priorities), say)


def _wait(client: redis.Redis, applied: Callable[[list[str]], bool], say: Callable[[str], None]) -> bool:
    deadline = time.monotonic() + ACK_WAIT_S
    while True:
        daemons = _published(client)
        behind = [daemon_id for daemon_id, shown in daemons.items() if not applied(shown)]
        if not behind or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    if not daemons:
        say("no daemon is alive: each one honours it when it starts")
    elif behind:
        say(
            f"not yet shown by {len(behind)} of {len(daemons)} live daemons after {ACK_WAIT_S:g} s: "
            f"{', '.join(sorted(behind))} (they apply it when they next read Redis)"
        )
    else:
        say(f"applied by {len(daemons)} of {len(daemons)} live daemons")
    return not behind


def _published(client: redis.Redis) -> dict[str, list[str]]:
    """Each live daemon's id and the priorities its last published status shows paused."""
    names = sorted(client.scan_iter(match=keys.daemon_status("*"), count=100))
    shown: dict[str, list[str]] = {}
    for value in client.mget(names) if names else []:
        if value:
            status = json.loads(value)
            shown[status["id"]] = status.get("paused", [])
    return shown
