"""Numbers shared with forked processes are read whole while they are written: never zero, never a mix.

With `struct.pack_into` (which clears a field, then writes it byte by byte) a slot read its daemon's
pulse as zero about once in fifty reads here while the daemon beat without pause, took the daemon for
silent since boot and killed itself with a finished job (which then ran again: bench.load, 75 %).
"""

from __future__ import annotations

import os
import time

from adaptive_scheduler.governor.heap import HeapCell
from adaptive_scheduler.pulse import Pulse

SECONDS = 0.3


def _in_child(check: object) -> int:
    """Fork; the child runs `check()` (returning how many bad reads it saw) and exits with that count
    (capped at 100); the parent gets the child's pid."""
    pid = os.fork()
    if pid == 0:
        code = 100
        try:
            code = min(100, check())  # type: ignore[operator]
        finally:
            os._exit(code)
    return pid


def _bad_reads(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_slot_never_reads_a_beating_daemons_pulse_as_silent() -> None:
    pulse = Pulse()
    end = time.monotonic() + SECONDS

    def reader() -> int:
        bad = 0
        while (now := time.monotonic()) < end:
            # a read is whole if it is near `now` (either way: this reader may be descheduled between
            # its clock and its read while the daemon beats on); a half-written one is off by hours
            bad += abs(pulse.age(now)) > 5.0
        return bad

    child = _in_child(reader)
    while time.monotonic() < end + 0.05:  # the daemon's loop: a beat at every turn
        pulse.beat(time.monotonic())
    assert _bad_reads(child) == 0


def test_the_daemon_reads_only_heap_readings_a_slot_wrote() -> None:
    cell = HeapCell()
    written = (2**40 + 1, 2**33 - 1)  # every byte differs: a mix of the two is neither
    cell.write(written[0])
    end = time.monotonic() + SECONDS

    def writer() -> int:
        i = 0
        while time.monotonic() < end + 0.05:
            cell.write(written[i % 2])
            i += 1
        return 0

    child = _in_child(writer)
    reads = bad = 0
    while time.monotonic() < end:
        reads += 1
        bad += cell.read() not in written
    assert _bad_reads(child) == 0
    assert bad == 0 and reads > 1000
    cell.close()
