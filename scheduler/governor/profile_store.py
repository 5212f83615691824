"""The learned memory profiles, kept in Redis so every daemon shares them and a restart keeps them.

One hash, ``asched:profiles``: task (the job's function path) -> versioned JSON (`profiles.encode`).
The daemon holds a copy, updates it as jobs end, writes the changed entries with its housekeeping
round trip (once a second, whatever the job rate) and reads the whole hash back every
`REFRESH_S` to learn what other daemons saw. Two daemons that observe one task in the same second
both write; the last write wins, which loses an observation, never a profile. The hash holds at most
`max_tasks` entries: the least recently updated go first. An entry that does not decode is ignored
with one log line, never trusted.
"""

from __future__ import annotations

import json

import redis
from adaptive_scheduler import keys
from adaptive_scheduler.governor.profiles import Profile, Rule, decode, encode, observe, predict
from loguru import logger

REFRESH_S = 10.0
PREDICTION_KEPT_S = 60.0  # a prediction decays with a 24 h half-life: a minute-old one is still right


class ProfileStore:
    """Profiles by task, in memory and in Redis."""

    def __init__(self, client: redis.Redis, rule: Rule, max_tasks: int) -> None:
        self.client = client
        self.rule = rule
        self.max_tasks = max_tasks
        self.profiles: dict[str, Profile] = {}
        self._dirty: set[str] = set()
        self._refused: set[str] = set()  # entries already reported as unreadable
        self._next_refresh = 0.0
        # task -> (the profile it was computed from, when, the prediction): admission asks for every
        # start and every waiting job's retry, and the weighted quantile sorts and decays every peak
        self._predicted: dict[str, tuple[Profile, float, int | None]] = {}

    def predict(self, task: str, now: float) -> int | None:
        """Bytes the task's next run is expected to add at its peak; None before its first run ends."""
        profile = self.profiles.get(task)
        if profile is None:
            return None
        kept = self._predicted.get(task)
        if kept is not None and kept[0] is profile and now - kept[1] < PREDICTION_KEPT_S:
            return kept[2]
        if len(self._predicted) > 2 * self.max_tasks:  # profiles evicted or replaced: start afresh
            self._predicted.clear()
        value = predict(profile, now, self.rule)
        self._predicted[task] = (profile, now, value)
        return value

    def observe(self, task: str, peak_bytes: int, now: float, stopped: bool) -> Profile:
        """Learn from a run that ended (`stopped`: for memory, so `peak_bytes` is a lower bound)."""
        profile = observe(self.profiles.get(task), peak_bytes, now, stopped, self.rule)
        self.profiles[task] = profile
        self._dirty.add(task)
        return profile

    def write(self, pipe: redis.client.Pipeline) -> None:
        """Add the changed profiles (and the eviction of the oldest, past `max_tasks`) to `pipe`."""
        evicted = self._evict()
        if self._dirty:
            pipe.hset(keys.PROFILES, mapping={task: encode(self.profiles[task]) for task in self._dirty})
            self._dirty.clear()
        if evicted:
            pipe.hdel(keys.PROFILES, *evicted)

    def refresh(self, now: float, force: bool = False) -> None:
        """Read every daemon's profiles (every `REFRESH_S`); local changes not yet written are kept."""
        if not force and now < self._next_refresh:
            return
        self._next_refresh = now + REFRESH_S
        try:
            stored = self.client.hgetall(keys.PROFILES)
        except redis.ResponseError as exc:  # not a hash: another application's key, or a damaged one
            if "" not in self._refused:
                self._refused.add("")
                logger.error("memory profiles not read: {} is not a hash ({})", keys.PROFILES, exc)
            return
        for raw_task, raw in stored.items():
            task = raw_task.decode(errors="replace")
            if task in self._dirty:
                continue
            try:
                self.profiles[task] = decode(raw, now)
            except (ValueError, UnicodeDecodeError) as exc:
                self.profiles.pop(task, None)
                if task not in self._refused:
                    self._refused.add(task)
                    logger.warning("memory profile of {} ignored (not trusted): {}", task, _short(exc))

    def _evict(self) -> list[str]:
        excess = len(self.profiles) - self.max_tasks
        if excess <= 0:
            return []
        oldest = sorted(self.profiles, key=lambda task: self.profiles[task].updated_s)[:excess]
        for task in oldest:
            del self.profiles[task]
            self._dirty.discard(task)
        return oldest


def _short(exc: Exception) -> str:
    text = str(exc) if not isinstance(exc, json.JSONDecodeError) else "not JSON"
    return text[:200]
