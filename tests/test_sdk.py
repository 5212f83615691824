"""The task SDK outside the daemon: tasks written with it still run as plain functions."""

from __future__ import annotations

from adaptive_scheduler.tasks import context

from tests.fixtures import jobs


def test_an_sdk_task_runs_as_a_plain_function_outside_the_daemon() -> None:
    assert context().resume_state is None
    assert jobs.long_sum(1000, chunk=100) == {"total": 999 * 1000 // 2, "runs": 1}
    assert jobs.allocate_steps(1, steps=2, step_s=0) == 2
