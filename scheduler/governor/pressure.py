"""Memory pressure levels with hysteresis (pure): a reading in, a level out.

    NORMAL < elevated <= ELEVATED < high <= HIGH < emergency <= EMERGENCY     (percent of the budget)

Going up is immediate: the first reading at or above a threshold raises the level, because the host
may be seconds from an OOM kill. Going down is slow on purpose: the reading must stay below the
current level's threshold minus `margin` for `hold_s` before the level drops, one level at a time,
so a reading that wobbles around a threshold cannot flap the level (and the actions it drives).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Level(IntEnum):
    """Ordered, so `level >= Level.HIGH` reads as it should."""

    NORMAL = 0
    ELEVATED = 1
    HIGH = 2
    EMERGENCY = 3


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Percent of the budget at which each level starts, and the hysteresis band."""

    elevated: float = 70.0
    high: float = 85.0
    emergency: float = 95.0
    margin: float = 5.0  # points below a threshold before its level may be left
    hold_s: float = 2.0  # ... held that long

    def start_of(self, level: Level) -> float:
        """The percent at which `level` starts (0 for NORMAL)."""
        return (0.0, self.elevated, self.high, self.emergency)[level]


@dataclass(frozen=True, slots=True)
class State:
    """The level, and since when (monotonic s) the reading has been low enough to leave it."""

    level: Level = Level.NORMAL
    calm_since: float | None = None


def level_for(percent: float, thresholds: Thresholds) -> Level:
    """The level a reading implies on its own, without hysteresis."""
    for level in (Level.EMERGENCY, Level.HIGH, Level.ELEVATED):
        if percent >= thresholds.start_of(level):
            return level
    return Level.NORMAL


def classify(percent: float, state: State, thresholds: Thresholds, now: float) -> State:
    """The next state after a reading of `percent` at monotonic time `now`."""
    target = level_for(percent, thresholds)
    if target >= state.level:
        return State(target) if target > state.level else State(state.level)
    if percent >= thresholds.start_of(state.level) - thresholds.margin:
        return State(state.level)  # inside the band: stay, and restart the hold
    if state.calm_since is None:
        return State(state.level, now)
    if now - state.calm_since >= thresholds.hold_s:
        return State(Level(state.level - 1), now)  # one level down; the next needs its own hold
    return state
