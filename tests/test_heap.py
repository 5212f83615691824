"""The heap reading: malloc's count sees untouched allocations; a forked slot's cell reaches the daemon."""

from __future__ import annotations

import ctypes
import os
import time

import psutil
from adaptive_scheduler.governor.heap import HeapCell, malloc_in_use, start_sampler

MIB = 2**20


def test_malloc_in_use_counts_an_allocation_before_its_pages_are_touched() -> None:
    libc = ctypes.CDLL(None)
    libc.calloc.restype = ctypes.c_void_p
    rss_before, heap_before = psutil.Process().memory_info().rss, malloc_in_use()
    block = libc.calloc(200, MIB)
    try:
        assert malloc_in_use() - heap_before >= 200 * MIB
        assert psutil.Process().memory_info().rss - rss_before < 20 * MIB
    finally:
        libc.free(ctypes.c_void_p(block))
    assert malloc_in_use() - heap_before < 10 * MIB


def test_a_forked_process_reports_its_heap_through_the_cell() -> None:
    cell = HeapCell()
    pid = os.fork()
    if pid == 0:  # the child, as a slot: its sampler thread writes while "the job" holds 64 MiB
        try:
            start_sampler(cell, 0.01)
            block = bytearray(64 * MIB)
            time.sleep(0.2)
            del block
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert cell.read() > 60 * MIB  # the parent reads what the child wrote last
    cell.close()
