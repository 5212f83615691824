"""How long processes waited for a CPU: the run-queue figures of ``/proc/<pid>/schedstat`` (Linux).

On a machine whose cores are all busy, every hop of a job's way (producer, Redis, daemon, slot) first
waits for a core; this tells that wait apart from the job system's own work. ``schedstat`` holds three
numbers since the process started: ns on a CPU, ns runnable but waiting, and timeslices run.
"""

from __future__ import annotations

from collections.abc import Iterable

Snapshot = dict[int, tuple[int, int]]  # pid -> (ns waited, timeslices)


def read(pids: Iterable[int]) -> Snapshot:
    """The wait and timeslice counters of each pid still alive (others are left out)."""
    snap: Snapshot = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/schedstat") as f:
                _, wait_ns, slices = (int(x) for x in f.read().split()[:3])
        except (OSError, ValueError):
            continue
        snap[pid] = (wait_ns, slices)
    return snap


def totals(before: Snapshot, after: Snapshot) -> tuple[int, int]:
    """Summed growth (ns waited, timeslices) of the pids in both snapshots."""
    wait_ns = slices = 0
    for pid, (w, s) in after.items():
        if pid in before:
            wait_ns += w - before[pid][0]
            slices += s - before[pid][1]
    return wait_ns, slices


def wait_per_slice_us(wait_ns: int, slices: int) -> float | None:
    """Mean wait for a CPU before each timeslice, in µs; None without a timeslice."""
    return wait_ns / slices / 1000 if slices else None
