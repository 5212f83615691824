"""The memory governor: read memory, turn it into a level, learn what each task needs, decide what starts
and what stops.

Mechanism (I/O) and policy (pure) live apart: `monitor` and `heap` read memory; `pressure`, `policy`,
`profiles`, `admission` and `victim` are functions of values; `reader` keeps the level between
readings and `profile_store` keeps the learned profiles in Redis.
"""

from __future__ import annotations

from adaptive_scheduler.governor.reader import Governor, release_daemon_memory

__all__ = ["Governor", "release_daemon_memory"]
