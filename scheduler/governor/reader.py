"""The memory governor's reading side: sample memory on a fixed cadence and keep the pressure level.

The daemon calls `read()` from its loop; the decisions that follow a reading live in `policy`, and
the daemon applies them. A level change is logged once, with the reading that caused it.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
from typing import TYPE_CHECKING

from adaptive_scheduler.governor.monitor import MemorySample, Monitor
from adaptive_scheduler.governor.pressure import Level, State, Thresholds, classify
from loguru import logger

if TYPE_CHECKING:
    from adaptive_scheduler.settings import Settings

MIB = 2**20


class Governor:
    """Memory readings turned into a pressure level with hysteresis."""

    def __init__(self, settings: Settings) -> None:
        self.thresholds = Thresholds(
            settings.elevated_percent,
            settings.high_percent,
            settings.emergency_percent,
            settings.pressure_margin_percent,
            settings.pressure_hold_s,
        )
        self.monitor = Monitor(settings.memory_budget)
        self.state = State()
        self.sample: MemorySample | None = None
        self.interval_s = settings.sample_interval_s
        self.next_read = 0.0
        logger.info(
            "memory budget {:.0f} MiB ({}); levels at {:g}/{:g}/{:g} %",
            self.monitor.budget / MIB,
            self.monitor.budget_source,
            settings.elevated_percent,
            settings.high_percent,
            settings.emergency_percent,
        )

    @property
    def level(self) -> Level:
        return self.state.level

    def due(self, now_mono: float) -> bool:
        return now_mono >= self.next_read

    def read(self, now_mono: float) -> bool:
        """Take a sample and update the level; True when the level changed."""
        self.next_read = now_mono + self.interval_s
        self.sample = self.monitor.sample()
        before = self.state.level
        self.state = classify(self.sample.percent, self.state, self.thresholds, now_mono)
        if self.state.level == before:
            return False
        logger.bind(level=self.state.level.name, pressure=round(self.sample.percent, 1)).warning(
            "memory pressure {} -> {} at {:.1f} % (used {:.0f} MiB, heap {:.0f} MiB, of {:.0f} MiB; "
            "slots grew {})",
            before.name,
            self.state.level.name,
            self.sample.percent,
            self.sample.used / MIB,
            self.sample.heap / MIB,
            self.sample.budget / MIB,
            {i: f"{b / MIB:.0f} MiB" for i, b in self.sample.slot_growth.items()},
        )
        if self.state.level == Level.EMERGENCY:
            release_daemon_memory()
        return True


def release_daemon_memory() -> None:
    """Give the daemon's own free memory back to the OS: a full collection, then glibc's malloc_trim."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)
