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

The same run time decides how many jobs wait *in* a slot behind the one it runs (`behind`): a slot that
finishes a job of 50 µs and must then wait for the daemon to read its outcome and send the next one
(a few hundred µs when the daemon is parsing a claim) idles most of the time; with the next jobs
already in its pipe it goes straight on (measured: a drain of no-op jobs, ~6,900 -> ~12,000 jobs/s). Only
while calm, about `BEHIND_S` of work per slot, and only jobs of tasks known to be short behind a job
of a task known to be short (`short`): a job waiting in a slot cannot move to another one until the
job ahead of it ends, so it must never wait behind a long one. P0 jobs arriving do not stop it: a P0
job never waits in a slot (it takes a free one or the P0 lane, and a slot asked to make room gives its
waiting jobs back first), and holding the slots' throughput back while 10 % of the jobs are P0 made
the rest queue longer (`bench.load` at 75 %, one run each: all-jobs p99 14.5 s with that rule, 7.6 s
without; P0 p99 6.1 and 5.9 ms).
"""

from __future__ import annotations

import math

HOLD_S = 0.02  # hold at most this much predicted work per slot beyond what runs
SMOOTHING = 0.05  # weight of the newest run time in the mean (about the last 20 jobs)
P0_QUIET_S = 10.0  # the floor until this long after the last P0 job started
BEHIND_S = 0.002  # at most this much predicted work waits in a slot behind its running job
BEHIND_MAX = 8  # ... and at most this many jobs
TASKS_KEPT = 1000  # run times kept per task (the oldest task is forgotten first)


class Prefetch:
    """The local queue's depth, from the run times of the jobs this daemon finished."""

    def __init__(self, floor: int, ceiling: int, slots: int) -> None:
        self.floor = floor
        self.ceiling = max(floor, ceiling)
        self.slots = slots
        self.mean_run_s: float | None = None  # None until a job has finished
        self.p0_started_mono = -math.inf
        self._task_run_s: dict[str, float] = {}  # per task: the mean run time, smoothed the same way

    def p0_started(self, now_mono: float) -> None:
        """A P0 job started: hold the floor for a while (see the module's docstring)."""
        self.p0_started_mono = now_mono

    def observe(self, run_s: float, task: str) -> None:
        """A job of `task` ran for `run_s` seconds."""
        self.mean_run_s = _smoothed(self.mean_run_s, run_s)
        mean = self._task_run_s.pop(task, None)  # re-inserted: the dict's order is the order of use
        if mean is None and len(self._task_run_s) >= TASKS_KEPT:
            del self._task_run_s[next(iter(self._task_run_s))]
        self._task_run_s[task] = _smoothed(mean, run_s)

    def short(self, task: str) -> bool:
        """Whether jobs of `task` have been timed and take at most `BEHIND_S` (on the mean)."""
        mean = self._task_run_s.get(task)
        return mean is not None and mean <= BEHIND_S

    def depth(self, calm: bool, now_mono: float) -> int:
        """How many claimed jobs to hold: the floor until jobs have been timed, under pressure, and while
        P0 jobs arrive."""
        if not calm or self.mean_run_s is None or now_mono - self.p0_started_mono < P0_QUIET_S:
            return self.floor
        wanted = math.ceil(self.slots * HOLD_S / max(self.mean_run_s, 1e-6))
        return min(self.ceiling, max(self.floor, wanted))

    def behind(self, calm: bool) -> int:
        """How many jobs may wait in a slot behind its running job: none until jobs have been timed and
        under pressure; then about `BEHIND_S` of work, at most `BEHIND_MAX`."""
        if not calm or self.mean_run_s is None:
            return 0
        return min(BEHIND_MAX, int(BEHIND_S / max(self.mean_run_s, 1e-6)))


def _smoothed(mean: float | None, sample: float) -> float:
    return sample if mean is None else mean + SMOOTHING * (sample - mean)
