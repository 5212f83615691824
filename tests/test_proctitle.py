"""Process titles: what `ps` shows for each slot (the daemon's is checked on a real one, test_cli)."""

from __future__ import annotations

import pytest
from adaptive_scheduler.proctitle import PREFIX, slot_role


@pytest.mark.parametrize(("index", "lane", "role"), [(0, False, "slot 0"), (2, True, "slot 2 (P0 lane)")])
def test_a_slot_is_titled_by_the_index_its_metrics_use_and_the_lane_says_so(
    index: int, lane: bool, role: str
) -> None:
    assert slot_role(index, lane) == role
    assert PREFIX == "adaptive-scheduler: "
