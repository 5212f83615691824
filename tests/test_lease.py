"""What a daemon assumes of its lease by its own clock, and how long its slots let it be silent (pure)."""

from __future__ import annotations

import pytest
from adaptive_scheduler.lease import LeaseClock, renewal_interval_s
from adaptive_scheduler.pulse import Pulse, fence_after_s


def test_the_lease_is_in_doubt_once_a_ttl_has_passed_since_the_last_successful_renewal_was_sent() -> None:
    clock = LeaseClock(ttl_s=10, now_mono=100.0)
    assert not clock.in_doubt(109.9) and clock.in_doubt(110.0)
    clock.renewed(108.0)
    assert not clock.in_doubt(117.9) and clock.in_doubt(118.0)
    clock.renewed(90.0)  # an older renewal's answer arriving late moves nothing back
    assert clock.in_doubt(118.0)


@pytest.mark.parametrize(("ttl_s", "renew_s", "fence_s"), [(10, 1.0, 8.75), (2, 0.5, 1.25), (1, 0.25, 0.5)])
def test_slots_stop_their_jobs_before_the_lease_can_have_expired(
    ttl_s: float, renew_s: float, fence_s: float
) -> None:
    assert renewal_interval_s(ttl_s) == renew_s
    assert fence_after_s(ttl_s, renew_s) == fence_s
    # the lease was renewed at most one interval before the daemon's last tick: it outlives the fence
    assert fence_s + renew_s < ttl_s


def test_the_pulse_tells_its_age() -> None:
    pulse = Pulse()
    pulse.beat(50.0)
    assert pulse.age(52.5) == 2.5
