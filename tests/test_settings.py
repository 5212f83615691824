"""Settings: sources and precedence, validation, and one readable line per mistake."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from adaptive_scheduler.settings import SettingsError, load_settings
from adaptive_scheduler.settings.load import NON_SETTING_VARIABLES
from adaptive_scheduler.settings.snapshot import freeze

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_need_no_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.slots == 2 and settings.queues == ("p0", "p1", "p2", "p3") and settings.redis_url is None


def test_environment_beats_dotenv_beats_toml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "asched.toml"
    config.write_text('slots = 3\nlocal_queue_depth = 9\nmemory_budget = "1GiB"\nslot_mode = "fresh"\n')
    (tmp_path / ".env").write_text("ASCHED_LOCAL_QUEUE_DEPTH=7\nASCHED_SLOT_MODE=pool\n")
    monkeypatch.setenv("ASCHED_SLOT_MODE", "fresh")
    settings = load_settings(config)
    assert (settings.slots, settings.local_queue_depth, settings.slot_mode) == (3, 7, "fresh")
    assert settings.memory_budget == 1024**3


def test_the_config_path_can_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text("slots = 4\n")
    monkeypatch.setenv("ASCHED_CONFIG", str(tmp_path / "c.toml"))
    assert load_settings().slots == 4


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"slots": 0},
            "invalid setting slots (ASCHED_SLOTS) = 0: Input should be greater than or equal to 1",
        ),
        (
            {"redis_url": "http://host"},
            "redis_url (ASCHED_REDIS_URL) = <hidden>: Value error, must start with",
        ),
        ({"high_percent": 60}, "thresholds must increase strictly inside (0, 100)"),
        ({"emergency_percent": 100}, "thresholds must increase strictly inside (0, 100)"),
        ({"memory_budget": "lots"}, "memory_budget (ASCHED_MEMORY_BUDGET) = 'lots': could not parse"),
        (
            {"slot_mode": "threads"},
            "slot_mode (ASCHED_SLOT_MODE) = 'threads': Input should be 'pool' or 'fresh'",
        ),
        ({"queues": ["a", "a", "b", "c"]}, "must be four distinct"),
        (
            {"queues": ["a", "b", "c"]},
            "invalid setting queues (ASCHED_QUEUES) = ['a', 'b', 'c']: Value error, queues needs exactly 4 "
            "names, P0..P3 (got 3)",
        ),
        ({"queues": ["a", "b", "c", "d", "e"]}, "queues needs exactly 4 names, P0..P3 (got 5)"),
        ({"colour": "blue"}, "unknown setting 'colour'"),
        ({"allowed_modules": ["myapp.jobs", "builtins"]}, "'builtins' is part of Python's standard library"),
        ({"allowed_modules": ["os"]}, "'os' is part of Python's standard library, which runs code"),
        ({"allowed_modules": ["os.path"]}, "'os.path' is part of Python's standard library"),
        (
            {"allowed_modules": ["adaptive_scheduler.cli"]},
            "'adaptive_scheduler.cli' is adaptive-scheduler's own code",
        ),
        ({"allowed_modules": ["myapp/jobs"]}, "'myapp/jobs' is not a module name"),
        ({"slot": 4}, "unknown setting 'slot' (did you mean 'slots'?)"),
        (
            {"memory_budget": "10MB"},
            "invalid setting memory_budget (ASCHED_MEMORY_BUDGET) = '10MB': Value error, must be at least "
            "64.0MiB (got 10.0MB)",
        ),
        (
            {"memory_budget": 0},
            "memory_budget (ASCHED_MEMORY_BUDGET) = 0: Value error, must be at least 64.0MiB",
        ),
        ({"memory_budget": "63MiB"}, "must be at least 64.0MiB (got 63.0MiB)"),
        (
            {"memory_budget": "100MiB", "slot_memory_cap": "200MB"},
            "invalid settings: Value error, slot_memory_cap (200.0MB) must not exceed "
            "memory_budget (100.0MiB)",
        ),
        ({"periodic": [{"name": "beat", "task": "heartbeat", "every_s": "inf"}]}, "a finite number"),
    ],
)
def test_a_wrong_value_gives_one_line_naming_setting_value_and_rule(
    overrides: dict[str, object], message: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SettingsError) as caught:
        load_settings(**overrides)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


FINITE_DURATIONS = [
    "stop_timeout_s",
    "lease_ttl_s",
    "preempt_grace_s",
    "sample_interval_s",
    "p0_lane_idle_s",
    "breaker_window_s",
    "breaker_cooldown_s",
    "admission_max_wait_s",
    "profile_half_life_s",
    "pressure_hold_s",
    "default_job_timeout_s",
]


@pytest.mark.parametrize("name", FINITE_DURATIONS)
@pytest.mark.parametrize("value", ["inf", "Infinity", "nan", "-inf"])
def test_a_duration_must_be_finite(
    name: str, value: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    variable = f"ASCHED_{name.upper()}"
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    expected = f"invalid setting {name} ({variable}) = {value!r}: Input should be a finite number"
    assert str(caught.value) == expected


def test_every_float_setting_must_be_finite(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    from adaptive_scheduler.settings import Settings

    floats = [name for name, field in Settings.model_fields.items() if field.annotation in (float, "float")]
    assert set(FINITE_DURATIONS) <= set(floats)
    for name in floats:
        with pytest.raises(SettingsError, match="finite number"):
            load_settings(**{name: float("nan")})


@pytest.mark.parametrize(
    ("variable", "message"),
    [
        ("ASCHED_COLOUR", "unknown environment variable ASCHED_COLOUR: not a setting (see the configuration"),
        (
            "ASCHED_SLOT",
            "unknown environment variable ASCHED_SLOT: not a setting (did you mean ASCHED_SLOTS?)",
        ),
        ("ASCHED_STOP_TIMEOUT", "(did you mean ASCHED_STOP_TIMEOUT_S?)"),
        ("ASCHED_CONFG", "(did you mean ASCHED_CONFIG?)"),
        (
            "asched_slotz",
            "unknown environment variable asched_slotz: not a setting (did you mean ASCHED_SLOTS?)",
        ),
    ],
)
def test_an_asched_variable_that_is_not_a_setting_is_refused_by_name(
    variable: str, message: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(variable, "4")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_unknown_variables_and_wrong_values_are_reported_together(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ASCHED_SLOT", "4")
    monkeypatch.setenv("ASCHED_SLOTS", "0")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value) == (
        "unknown environment variable ASCHED_SLOT: not a setting (did you mean ASCHED_SLOTS?); "
        "invalid setting slots (ASCHED_SLOTS) = '0': Input should be greater than or equal to 1"
    )


@pytest.mark.parametrize("variable", sorted(NON_SETTING_VARIABLES))
def test_the_projects_own_asched_variables_are_not_settings_and_are_allowed(
    variable: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    if variable == "ASCHED_CONFIG":
        (tmp_path / "c.toml").write_text("")
        monkeypatch.setenv(variable, str(tmp_path / "c.toml"))
    else:
        monkeypatch.setenv(variable, "1")
    assert load_settings().slots == 2


def test_a_budget_of_64_mib_is_the_floor_and_is_accepted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ASCHED_MEMORY_BUDGET", "64MiB")
    settings = load_settings()
    assert settings.memory_budget == 64 * 1024**2 == settings.slot_memory_cap


@pytest.mark.parametrize(
    ("budget", "cap"), [(None, 400_000_000), ("300MB", 300_000_000), ("2GiB", 400_000_000)]
)
def test_the_default_slot_cap_is_lowered_to_a_smaller_budget(
    budget: str | None, cap: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(**({"memory_budget": budget} if budget else {}))
    assert settings.slot_memory_cap == cap


def test_a_slot_cap_equal_to_the_budget_is_allowed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ASCHED_MEMORY_BUDGET", "500MB")
    monkeypatch.setenv("ASCHED_SLOT_MEMORY_CAP", "500MB")
    assert load_settings().slot_memory_cap == 500_000_000


def test_the_redis_password_never_appears_in_errors_or_repr(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(redis_url="redis://user:hunter2@localhost:6379/0")
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings)
    with pytest.raises(SettingsError) as caught:
        load_settings(redis_url="http://user:hunter2@x", slots=0)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"), [("slots = [", "is not valid TOML"), (None, "cannot read config file")]
)
def test_a_bad_config_file_is_reported(
    text: str | None, message: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "bad.toml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(SettingsError, match=message):
        load_settings(path)


def test_the_readme_configuration_table_matches_the_model() -> None:
    from adaptive_scheduler.settings.table import replace_in

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert replace_in(readme) == readme, "README is stale: run `python -m adaptive_scheduler.settings.table`"


def test_the_frozen_snapshot_the_daemon_runs_on_holds_the_same_values_and_no_pydantic(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(
        redis_url="redis://user:hunter2@localhost:6379/0",
        memory_budget="1GiB",
        periodic=[{"name": "beat", "task": "heartbeat", "every_s": 5, "kwargs": {"n": [1, 2]}}],
    )
    frozen = freeze(settings)
    for name in type(settings).model_fields:
        value, copy = getattr(settings, name), getattr(frozen, name)
        if name == "redis_url":
            assert (
                copy.get_secret_value() == value.get_secret_value() == "redis://user:hunter2@localhost:6379/0"
            )
        elif name == "periodic":
            assert [vars(job) for job in copy] == [job.model_dump() for job in value]
        else:
            assert copy == value and type(copy).__module__.partition(".")[0] != "pydantic", name
    assert frozen.memory_budget == 1 << 30 and type(frozen.memory_budget) is int  # ByteSize, unwrapped
    assert frozen.redis_url_text() == settings.redis_url_text()
    assert "hunter2" not in repr(frozen)
    with pytest.raises(AttributeError, match="read-only"):
        frozen.slots = 3
    # what the daemon process does with it: unpickle, without pydantic ever being imported
    check = (
        "import pickle, sys; s = pickle.loads(sys.stdin.buffer.read()); "
        "assert 'pydantic' not in sys.modules, sorted(m for m in sys.modules if 'pydantic' in m); "
        "print(s.periodic[0].kwargs, s.memory_budget, s.redis_url_text())"
    )
    done = subprocess.run(
        [sys.executable, "-c", check], input=pickle.dumps(frozen), capture_output=True, cwd=ROOT, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().split() == [
        "{'n':",
        "[1,",
        "2]}",
        str(1 << 30),
        "redis://user:hunter2@localhost:6379/0",
    ]


@pytest.mark.parametrize(
    "module",
    [
        "builtins",
        "os",
        "posix",
        "subprocess",
        "pty",
        "shutil",
        "importlib",
        "importlib.util",
        "runpy",
        "code",
        "codeop",
        "ctypes",
        "sys",
        "multiprocessing",
        "pickle",
        "marshal",
        "webbrowser",
        "pdb",
    ],
)
def test_no_standard_library_module_may_be_allowed(
    module: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SettingsError, match="standard library"):
        load_settings(allowed_modules=[module])


def test_the_operators_own_modules_and_the_demo_may_be_allowed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    modules = ("myapp.jobs", "tests.fixtures.jobs", "adaptive_scheduler.tasks.demo")
    assert load_settings(allowed_modules=list(modules)).allowed_modules == modules
