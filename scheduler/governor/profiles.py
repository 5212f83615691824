"""What a task needs, learned from its runs (pure): a decayed high quantile of recent peaks, plus a margin.

After every run the daemon records the *peak* the job added to its slot (the larger of RSS growth and
malloc growth, as the monitor reads them). The prediction for the next run follows Kubernetes' VPA
recommender: a weighted quantile (p90 by default) of the recent peaks, each weighted by
``0.5 ** (age / half_life)``, times ``1 + margin`` (15 %). A run stopped for memory only shows a lower
bound of its need, so it counts as what it had reached times `stop_bump`: the next prediction is
higher than the run that did not fit.

Profiles are stored as versioned JSON (``"v": 1``); `decode` refuses anything unreadable or absurd
(negative, beyond `MAX_PEAK_BYTES`, timestamps from the future) so a damaged entry is never trusted.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

VERSION = 1
MAX_PEAK_BYTES = 1 << 46  # 64 TiB: no single job of one host adds more
FUTURE_SLACK_S = 24 * 3600.0  # hosts' clocks disagree, but not by a day


@dataclass(frozen=True, slots=True)
class Rule:
    """How peaks become a prediction."""

    quantile: float = 0.9
    margin: float = 0.15
    half_life_s: float = 24 * 3600.0
    stop_bump: float = 1.2
    max_peaks: int = 32


@dataclass(frozen=True, slots=True)
class Profile:
    """What is known of one task's memory: recent peaks (unix s, bytes), oldest first."""

    runs: int = 0
    peaks: tuple[tuple[float, int], ...] = ()
    memory_stops: int = 0
    updated_s: float = 0.0

    @property
    def last_peak(self) -> int:
        return self.peaks[-1][1] if self.peaks else 0


def observe(profile: Profile | None, peak_bytes: int, now: float, stopped: bool, rule: Rule) -> Profile:
    """The profile after one more run that added `peak_bytes` (`stopped`: it was stopped for memory)."""
    profile = profile or Profile()
    counted = int(peak_bytes * rule.stop_bump) if stopped else peak_bytes
    peaks = (*profile.peaks, (now, max(0, counted)))[-rule.max_peaks :]
    return Profile(profile.runs + 1, peaks, profile.memory_stops + int(stopped), now)


def predict(profile: Profile | None, now: float, rule: Rule) -> int | None:
    """Bytes the next run of the task is expected to add at its peak; None when nothing is known yet."""
    if profile is None or not profile.peaks:
        return None
    weighted = sorted((peak, 0.5 ** (max(0.0, now - at) / rule.half_life_s)) for at, peak in profile.peaks)
    total = sum(weight for _, weight in weighted)
    reached = 0.0
    for peak, weight in weighted:
        reached += weight
        if reached >= rule.quantile * total:
            return int(peak * (1 + rule.margin))
    return int(weighted[-1][0] * (1 + rule.margin))  # rounding: the largest peak


def encode(profile: Profile) -> str:
    """The stored form: versioned JSON."""
    record = {
        "v": VERSION,
        "runs": profile.runs,
        "peaks": [[round(at, 3), peak] for at, peak in profile.peaks],
        "stops": profile.memory_stops,
        "updated": round(profile.updated_s, 3),
    }
    return json.dumps(record, separators=(",", ":"))


def decode(raw: bytes | str, now: float) -> Profile:
    """A stored profile, checked.

    Raises:
        ValueError: not JSON, another version, or values no real run produces (the message says which).
    """
    try:
        record = json.loads(raw)
    except (RecursionError, OverflowError) as exc:  # nesting or numbers beyond what a float holds
        raise ValueError(f"not a profile ({type(exc).__name__})") from None
    if not isinstance(record, dict) or record.get("v") != VERSION:
        raise ValueError(f"not a version {VERSION} profile")
    runs, stops, updated = record.get("runs"), record.get("stops"), record.get("updated")
    peaks = record.get("peaks")
    if not (_count(runs) and _count(stops) and isinstance(peaks, list) and _time(updated, now)):
        raise ValueError("runs, stops, peaks or updated missing or out of range")
    checked = tuple(_peak(item, now) for item in peaks)
    if len(checked) > runs:
        raise ValueError(f"{len(checked)} peaks for {runs} runs")
    try:
        return Profile(runs, checked, stops, float(updated))
    except OverflowError:
        raise ValueError("updated is beyond a float") from None


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _time(value: object, now: float) -> bool:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value) and 0 <= value <= now + FUTURE_SLACK_S
    except OverflowError:  # an int too large for a float
        return False


def _peak(item: object, now: float) -> tuple[float, int]:
    if not (isinstance(item, list) and len(item) == 2 and _time(item[0], now) and _count(item[1])):
        raise ValueError(f"peak {item!r} is not [unix s, bytes]")
    if item[1] > MAX_PEAK_BYTES:
        raise ValueError(f"peak of {item[1]} bytes is absurd")
    return float(item[0]), int(item[1])
