"""Operator controls every daemon shares through Redis: paused priorities, and the memory level each
daemon reports for producers.

Pauses live in one hash (`asched:paused`): a priority's field exists while it is paused, holding when,
by whom and until when (JSON with `"v": 1`; `until` null = until `resume`). Every change is followed by a
PUBLISH on `asched:control`, which wakes the daemons to re-read the hash at once; each also re-reads it
at every housekeeping round (at most a second apart), so a lost message, or a pause that ran out
(`--for`), costs at most that long. A paused priority's queue is not claimed from: its jobs stay in
Redis, in their RQ queue, untouched.

Levels live in another hash (`asched:levels`): each daemon's field says its level and how long that
reading holds (one lease), rewritten at every housekeeping round and at once when the level changes,
removed on a clean stop. A producer reads both hashes in one round trip (`adaptive_scheduler.
backpressure`), so this module imports nothing but redis and the standard library.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import redis
from adaptive_scheduler import keys
from adaptive_scheduler.model import Priority

FORMAT = 1
# The governor's levels, by value (adaptive_scheduler.governor.pressure.Level; a test keeps them equal),
# spelled out here so that a producer does not import the governor (psutil and the rest).
LEVEL_NAMES = ("NORMAL", "ELEVATED", "HIGH", "EMERGENCY")


@dataclass(frozen=True, slots=True)
class Pause:
    """One paused priority."""

    priority: Priority
    since: float  # unix s
    until: float | None  # unix s; None: until resumed
    by: str  # user@host of the command that paused it

    def active(self, now: float) -> bool:
        return self.until is None or now < self.until

    def as_dict(self) -> dict[str, object]:
        return {"since": self.since, "until": self.until, "by": self.by}


def parse_pauses(raw: Mapping[bytes, bytes]) -> dict[Priority, Pause]:
    """The pauses in `asched:paused`'s fields; a field that is not a priority with a readable pause of a
    known format is ignored (a newer version's entry is not guessed at)."""
    pauses: dict[Priority, Pause] = {}
    for name, value in raw.items():
        try:
            priority = Priority.parse(name.decode())
            entry = json.loads(value)
            if entry.get("v") != FORMAT:
                continue
            until = None if entry.get("until") is None else float(entry["until"])
            pause = Pause(priority, float(entry["since"]), until, entry["by"])
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
            continue
        pauses[priority] = pause
    return pauses


def active(pauses: Mapping[Priority, Pause], now: float) -> frozenset[Priority]:
    """The priorities paused at `now` (a pause given `--for` a time ends by itself)."""
    return frozenset(priority for priority, pause in pauses.items() if pause.active(now))


def read_pauses(client: redis.Redis) -> dict[Priority, Pause]:
    return parse_pauses(client.hgetall(keys.PAUSED))


def pause(
    client: redis.Redis, priorities: Iterable[Priority], now: float, for_s: float | None, by: str
) -> None:
    """Pause `priorities` (for `for_s` seconds, or until resumed) and tell the daemons."""
    until = None if for_s is None else now + for_s
    entry = json.dumps({"v": FORMAT, "since": now, "until": until, "by": by})
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(keys.PAUSED, mapping={priority.name: entry for priority in priorities})
        pipe.publish(keys.CONTROL, "pauses")
        pipe.execute()


def resume(client: redis.Redis, priorities: Iterable[Priority]) -> None:
    """Resume `priorities` and tell the daemons."""
    with client.pipeline(transaction=True) as pipe:
        pipe.hdel(keys.PAUSED, *(priority.name for priority in priorities))
        pipe.publish(keys.CONTROL, "pauses")
        pipe.execute()


def level_entry(level: str, percent: float, until: float) -> str:
    """A daemon's field in `asched:levels`: its `level` (and `percent` of its budget), holding until
    `until` (unix s, by the daemon's clock)."""
    return json.dumps({"v": FORMAT, "level": level, "percent": round(percent, 1), "until": until})


def parse_levels(raw: Mapping[bytes, bytes], now: float) -> dict[str, str]:
    """The level of each daemon whose reading still holds at `now` (a daemon that died without a clean
    stop left a field that ran out); unreadable fields are ignored."""
    levels: dict[str, str] = {}
    for daemon_id, value in raw.items():
        try:
            entry = json.loads(value)
            if entry.get("v") == FORMAT and entry["level"] in LEVEL_NAMES and float(entry["until"]) > now:
                levels[daemon_id.decode()] = entry["level"]
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
            continue
    return levels


def highest(levels: Iterable[str]) -> str:
    """The highest of `levels` (NORMAL when there are none)."""
    return max(levels, key=LEVEL_NAMES.index, default=LEVEL_NAMES[0])


def prune_levels(client: redis.Redis, now: float) -> int:
    """Remove the fields of daemons whose reading ran out (they died without a clean stop); returns how
    many. Run at a daemon's start: daemon ids are per process, so such fields would pile up."""
    raw = client.hgetall(keys.LEVELS)
    live = parse_levels(raw, now)
    gone = [daemon_id for daemon_id in raw if daemon_id.decode(errors="replace") not in live]
    return int(client.hdel(keys.LEVELS, *gone)) if gone else 0
