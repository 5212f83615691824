"""The daemon's pulse as its slots see it: a dead man's switch against running one job twice.

A daemon that stops ticking (SIGSTOP, a VM pause, a hung loop) stops renewing its lease, and once the
lease expires another daemon reclaims its jobs and runs them. Its slots are separate processes and
would go on running those same jobs. So the daemon writes its monotonic time into a shared page every
tick (`beat`), and each slot's sampler thread reads it (`age`): a slot whose daemon has been silent
for `fence_s` (set to end before the lease can have expired) marks itself fenced and kills its own
process group. The daemon, if it comes back, sees the mark and puts the job back (a fenced write:
dropped if another daemon has the job by then) instead of failing it.

A daemon that is alive but cannot reach Redis keeps ticking, so its jobs keep running through an
outage; whether they are still its own is settled by the lease renewal once Redis answers.
"""

from __future__ import annotations

import time

from adaptive_scheduler.shared_cells import SharedCells


class Pulse:
    """The daemon's last tick (CLOCK_MONOTONIC, shared by every process of the host), in a page the
    slots forked from it share."""

    def __init__(self) -> None:
        self._cell = SharedCells(1, "d")  # forked slots read what the daemon writes, never half of it
        self.beat(time.monotonic())

    def beat(self, now_mono: float) -> None:
        self._cell[0] = now_mono

    def age(self, now_mono: float) -> float:
        """Seconds since the daemon's last tick."""
        return now_mono - self._cell[0]


def fence_after_s(lease_ttl_s: float, renewal_interval_s: float) -> float:
    """How long a slot lets its daemon be silent: the lease was renewed at most a renewal interval before
    the daemon's last tick, so it may expire `lease_ttl_s - renewal_interval_s` after that tick; a
    quarter of a second less, so the job is gone before anyone can reclaim it."""
    return max(0.25, lease_ttl_s - renewal_interval_s - 0.25)
