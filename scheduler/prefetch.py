"""How many claimed jobs the daemon holds locally (pure): deeper for short jobs, the setting for long.

Each claim-and-settle call to Redis has a fixed cost, in Redis and in the daemon, whatever the number
of jobs it carries; with jobs of a millisecond, a local queue of 5 makes the calls small and frequent,
and that fixed cost becomes most of the cost per job (Dramatiq's prefetch and Celery's prefetch
multiplier answer the same problem). But a job held claimed is kept from every other daemon and shows
as claimed, not running: so the daemon holds only what its slots will start within `HOLD_S`, by the
recent mean run time of its jobs: `local_queue_depth` for jobs of 10 ms or more on two slots, up to
`local_queue_max_depth` for the shortest. Under memory pressure it holds the floor only (whatever it
holds at EMERGENCY goes back to Redis), and so it does while P0 jobs arrive: a deep queue means big
claim-and-settle calls, and a P0 job that lands while one is in flight waits for it and for its own
(measured: `bench.burst`'s P0 p99 from the actual send, 6-9 ms at depth 5, 12-14 at 12, 7-28 at 32,
over a drain of a 30,000-job backlog). P0 latency comes first; throughput of short jobs second.
"""

from __future__ import annotations

import math

HOLD_S = 0.02  # hold at most this much predicted work per slot beyond what runs
SMOOTHING = 0.05  # weight of the newest run time in the mean (about the last 20 jobs)
P0_QUIET_S = 10.0  # the floor until this long after the last P0 job started


class Prefetch:
    """The local queue's depth, from the run times of the jobs this daemon finished."""

    def __init__(self, floor: int, ceiling: int, slots: int) -> None:
        self.floor = floor
        self.ceiling = max(floor, ceiling)
        self.slots = slots
        self.mean_run_s: float | None = None  # None until a job has finished
        self.p0_started_mono = -math.inf

    def p0_started(self, now_mono: float) -> None:
        """A P0 job started: hold the floor for a while (see the module's docstring)."""
        self.p0_started_mono = now_mono

    def observe(self, run_s: float) -> None:
        """A job ran for `run_s` seconds."""
        if self.mean_run_s is None:
            self.mean_run_s = run_s
        else:
            self.mean_run_s += SMOOTHING * (run_s - self.mean_run_s)

    def depth(self, calm: bool, now_mono: float) -> int:
        """How many claimed jobs to hold: the floor until jobs have been timed, under pressure, and while
        P0 jobs arrive."""
        if not calm or self.mean_run_s is None or now_mono - self.p0_started_mono < P0_QUIET_S:
            return self.floor
        wanted = math.ceil(self.slots * HOLD_S / max(self.mean_run_s, 1e-6))
        return min(self.ceiling, max(self.floor, wanted))
