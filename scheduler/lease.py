"""What a daemon may assume about its own lease, by its own clock.

The lease (a key with a TTL and this daemon's token, renewed by `renew.lua` at every housekeeping) is
what keeps other daemons from reclaiming this one's jobs. Redis expires it `lease_ttl_s` after the
last renewal reached it, which is no earlier than `lease_ttl_s` after this daemon *sent* that renewal.
So from the monotonic time a successful renewal was sent, the daemon knows how long the lease surely
holds; past that it is in doubt: it was frozen (SIGSTOP, a VM pause), cut off, or Redis was away, and
another daemon may have reclaimed its jobs. In doubt it starts nothing, claims nothing and writes no
outcome until a renewal answers: renewed, taken again (it had lapsed, nobody reclaimed), or lost.
"""

from __future__ import annotations

from enum import IntEnum


class Renewal(IntEnum):
    """renew.lua's answer."""

    LOST = 0  # reclaimed by another daemon (or the key holds another token): drop everything, rejoin
    RENEWED = 1
    TAKEN_AGAIN = 2  # it had lapsed, but no daemon had reclaimed this one's jobs


class LeaseClock:
    """The monotonic time up to which this daemon's lease surely holds."""

    def __init__(self, ttl_s: float, now_mono: float) -> None:
        self.ttl_s = ttl_s
        self.sent_mono = now_mono  # when the renewal that last succeeded was sent

    def renewed(self, sent_mono: float) -> None:
        """A renewal sent at `sent_mono` succeeded."""
        self.sent_mono = max(self.sent_mono, sent_mono)

    def in_doubt(self, now_mono: float) -> bool:
        """The lease may have expired: nothing may be started, claimed or written."""
        return now_mono >= self.sent_mono + self.ttl_s

    def renewal_interval_s(self) -> float:
        return renewal_interval_s(self.ttl_s)


def renewal_interval_s(ttl_s: float) -> float:
    """How often to renew: four times per lease (at most once a second), so that a loop delayed by a
    slow Redis call or a long collection does not let the lease lapse."""
    return min(1.0, ttl_s / 4)
