"""`tasks` and the profiles in `status`, as a user types them: real processes, real Redis."""

from __future__ import annotations

import json
import time

import redis
from adaptive_scheduler.governor.profiles import Profile, encode
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from tests.helpers import FIXTURES, cli, queue, running_daemon, wait_until

MIB = 2**20


def profile(*peaks_mib: int, stops: int = 0, age_s: float = 30.0) -> str:
    at = time.time() - age_s
    peaks = tuple((at, peak * MIB) for peak in peaks_mib)
    return encode(Profile(len(peaks) + stops, peaks, stops, at))


def test_tasks_without_profiles_says_they_are_learned_as_jobs_end(redis_url: str) -> None:
    env = {"ASCHED_REDIS_URL": redis_url}
    table, as_json = cli("tasks", env=env), cli("tasks", "--json", env=env)
    assert (table.returncode, as_json.returncode) == (0, 0), table.stderr + as_json.stderr
    assert table.stdout == "no task profiles yet (they are learned as jobs end)\n"
    assert json.loads(as_json.stdout) == []


def test_tasks_lists_every_profile_largest_prediction_first_and_survives_damaged_entries(
    client: redis.Redis, redis_url: str
) -> None:
    # Given two good profiles and two entries no daemon would trust
    client.hset(
        "asched:profiles",
        mapping={
            "myapp.jobs.thumb": profile(20, 10),
            "myapp.jobs.resize": profile(300, 250, stops=1),
            "myapp.jobs.broken": b"{not json",
            b"myapp.jobs.\xff": '{"v":1,"runs":1,"peaks":[],"stops":0,"updated":' + "9" * 400 + "}",
        },
    )
    env = {"ASCHED_REDIS_URL": redis_url}
    # When the user lists them
    table = cli("tasks", env=env)
    rows = cli("tasks", "--json", env=env)
    # Then both commands succeed and show every entry, the largest prediction first
    assert (table.returncode, rows.returncode) == (0, 0), table.stderr + rows.stderr
    assert "Traceback" not in table.stderr + rows.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:2] == ["task", "runs"] and len(lines) == 5
    assert [line.split()[0] for line in lines[1:3]] == ["myapp.jobs.resize", "myapp.jobs.thumb"]
    assert lines[1].split()[1:5] == ["3", f"{int(300 * MIB * 1.15) / MIB:.1f}", "250.0", "1"]
    assert "myapp.jobs.broken" in lines[3] + lines[4] and "unreadable: not JSON" in table.stdout
    assert "unreadable: runs, stops, peaks or updated missing or out of range" in table.stdout
    found = json.loads(rows.stdout)
    assert found[0] == {
        "task": "myapp.jobs.resize",
        "runs": 3,
        "predicted_bytes": int(300 * MIB * 1.15),
        "last_peak_bytes": 250 * MIB,
        "memory_stops": 1,
        "updated": found[0]["updated"],
        "error": None,
    }
    assert time.time() - 60 < found[0]["updated"] < time.time()
    assert [row["error"] is None for row in found] == [True, True, False, False]


def test_a_profiles_key_of_the_wrong_type_is_one_line_for_tasks_and_one_section_for_status(
    client: redis.Redis, redis_url: str
) -> None:
    client.set("asched:profiles", "oops")
    env = {"ASCHED_REDIS_URL": redis_url}
    tasks, status = cli("tasks", env=env), cli("status", env=env)
    assert tasks.returncode == 1 and "Traceback" not in tasks.stderr
    expected = "asched:profiles holds a string, not a hash of task profiles: delete it"
    assert tasks.stderr.startswith(f"adaptive-scheduler: {expected}")
    assert status.returncode == 1, status.stderr  # no daemon is alive; the table is printed all the same
    assert f"task memory profiles: {expected}" in status.stdout and "priority  queue" in status.stdout


def test_status_shows_the_ten_largest_profiles_and_json_has_them_all(
    client: redis.Redis, redis_url: str
) -> None:
    client.hset("asched:profiles", mapping={f"myapp.jobs.t{i:02}": profile(i + 1) for i in range(12)})
    env = {"ASCHED_REDIS_URL": redis_url}
    table = cli("status", env=env)
    overview = json.loads(cli("status", "--json", env=env).stdout)
    assert table.returncode == 1, table.stderr  # no daemon is alive; the table is printed all the same
    section = table.stdout.split("task memory profiles: 12 (the 10 largest;", 1)[1].splitlines()[1:]
    assert section[0].split()[:2] == ["task", "runs"]
    assert [line.split()[0] for line in section[1:]] == [f"myapp.jobs.t{i:02}" for i in range(11, 1, -1)]
    assert [row["task"] for row in overview["task_profiles"]][-2:] == ["myapp.jobs.t01", "myapp.jobs.t00"]
    assert overview["task_profiles_error"] is None


def test_a_daemon_learns_a_profile_that_tasks_and_status_show(client: redis.Redis, redis_url: str) -> None:
    env = {"ASCHED_REDIS_URL": redis_url, **FIXTURES}
    with running_daemon(redis_url):
        # When a job allocating 60 MB ends
        job = queue(client, 1).enqueue("tests.fixtures.jobs.allocate", 60, 0.3)
        fetched = Job.fetch(job.id, connection=client, serializer=JSONSerializer)
        wait_until(lambda: fetched.get_status(refresh=True) == JobStatus.FINISHED)
        # Then its task's profile is written within a housekeeping round and `tasks` shows it
        rows = wait_until(lambda: json.loads(cli("tasks", "--json", env=env).stdout), timeout_s=5)
        status = cli("status", env=env).stdout
    (learned,) = rows
    assert learned["task"] == "tests.fixtures.jobs.allocate" and learned["runs"] == 1
    assert 50 * MIB < learned["last_peak_bytes"] < 120 * MIB
    assert learned["predicted_bytes"] == int(learned["last_peak_bytes"] * 1.15)
    assert learned["memory_stops"] == 0 and learned["error"] is None
    assert "task memory profiles: 1\n" in status
    assert status.rstrip().splitlines()[-1].split()[:2] == ["tests.fixtures.jobs.allocate", "1"]
