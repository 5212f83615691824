"""The systemd unit: `systemd-analyze verify` says nothing, its security exposure stays low, and it keeps
the properties the daemon relies on (READY/watchdog notifications, SIGTERM to the main process only, a
stop timeout longer than the daemon's graceful stop, a memory limit the governor can act under).
The same holds for the unit plus the drop-in that runs an application's code (systemd/examples/).

systemd-analyze is required, not optional: CI installs it (`./dev` setup, Debian package `systemd`).
"""

from __future__ import annotations

import inspect
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from adaptive_scheduler.exits import EXIT_FAILURE, EXIT_SOFTWARE, EXIT_UNAVAILABLE, EXIT_USAGE
from adaptive_scheduler.service import backoff_s
from adaptive_scheduler.settings import Settings
from adaptive_scheduler.settings.load import load_settings
from adaptive_scheduler.settings.model import ENV_PREFIX

from tests.helpers import ROOT

UNIT = ROOT / "systemd" / "adaptive-scheduler.service"
ENV_EXAMPLE = ROOT / "systemd" / "env.example"
INSTALLED_EXEC = "ExecStart=/opt/adaptive-scheduler/.venv/bin/adaptive-scheduler run"
APP_DROPIN = ROOT / "systemd" / "examples" / "myapp.conf"
APP_CONFIG = ROOT / "systemd" / "examples" / "myapp.toml"
APP_EXEC = "ExecStart=/srv/myapp/.venv/bin/adaptive-scheduler run --config /etc/myapp/adaptive-scheduler.toml"
# systemd-analyze's --threshold is on a 0-100 scale, ten times the printed level: 2.0 ("OK");
# the unit scores 1.2.
EXPOSURE_THRESHOLD = 20
# The daemon's Redis client socket_timeout (scheduler/daemon.py): one loop turn can block this long on a
# hung Redis, then sleep up to the backoff cap, without sending a watchdog ping.
REDIS_SOCKET_TIMEOUT_S = 5.0
SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("systemd-analyze")
    if binary is None:
        pytest.fail(
            "systemd-analyze not found: install the Debian package `systemd` (./dev does as root)",
            pytrace=False,
        )
    env = os.environ | {"SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0", "LC_ALL": "C.UTF-8"}
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, env=env)


def with_local_script(source: Path, installed: str, target: Path) -> Path:
    """`source` copied to `target` with its ExecStart line `installed` pointing at this checkout's console
    script instead (verify checks that the program exists)."""
    text = source.read_text(encoding="utf-8")
    assert text.count(installed) == 1, f"expected exactly one line {installed!r} in {source.name}"
    script = Path(sys.executable).parent / "adaptive-scheduler"
    assert script.is_file(), f"no console script at {script}: install the project (./dev)"
    local = installed.replace(installed.split()[0], f"ExecStart={script}")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text.replace(installed, local), encoding="utf-8")
    return target


@pytest.fixture()
def checkable_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's console script."""
    return with_local_script(UNIT, INSTALLED_EXEC, tmp_path / UNIT.name)


@pytest.fixture()
def unit_with_app_dropin(checkable_unit: Path) -> Path:
    """The unit plus the app's drop-in, installed next to it as /etc/systemd/system would hold them
    (verify reads `<unit>.d/*.conf` from the unit's directory)."""
    with_local_script(APP_DROPIN, APP_EXEC, checkable_unit.parent / f"{UNIT.name}.d" / APP_DROPIN.name)
    return checkable_unit


def service_section(path: Path = UNIT) -> dict[str, list[str]]:
    """The [Service] section's keys, each with its values in file order."""
    values: dict[str, list[str]] = defaultdict(list)
    section = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        assert not line.endswith("\\"), "the parser here does not handle continued lines"
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            values[key.strip()].append(value.strip())
    return values


def one(service: dict[str, list[str]], key: str) -> str:
    assert len(service.get(key, [])) == 1, f"{key}= must be set once in {UNIT.name}"
    return service[key][0]


def seconds(timespan: str) -> float:
    """A systemd time span in seconds, as systemd itself parses it."""
    done = analyze("timespan", timespan)
    assert done.returncode == 0, done.stderr
    match = re.search(r"(?:μs|us):\s*(\d+)", done.stdout)
    assert match, done.stdout
    return int(match.group(1)) / 1e6


def size_bytes(size: str) -> int:
    match = re.fullmatch(r"(\d+)([KMGT]?)", size)
    assert match, f"size {size!r}: use an absolute size with K, M, G or T"
    return int(match.group(1)) * SIZE_UNITS[match.group(2)]


def test_verify_prints_nothing(checkable_unit: Path) -> None:
    # verify exits 0 on unknown keys and only warns: any output at all is a failure
    done = analyze("verify", str(checkable_unit))
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_security_exposure_is_below_the_threshold(checkable_unit: Path) -> None:
    assert_exposure_below_threshold(checkable_unit)


def assert_exposure_below_threshold(unit: Path) -> None:
    done = analyze("security", "--offline=true", f"--threshold={EXPOSURE_THRESHOLD}", str(unit))
    level = re.search(r"Overall exposure level for \S+: ([\d.]+)", done.stdout)
    assert level, done.stdout + done.stderr
    assert done.returncode == 0, f"exposure {level.group(1)} above {EXPOSURE_THRESHOLD / 10}:\n{done.stdout}"


def test_daemon_notifies_readiness_and_pings_the_watchdog_often_enough() -> None:
    service = service_section()
    assert one(service, "Type") == "notify"
    assert one(service, "NotifyAccess") == "main"  # slots and the embedded redis-server are children
    watchdog_s = seconds(one(service, "WatchdogSec"))
    # pings come every WatchdogSec/2 from the loop; a turn during a Redis outage may block this long
    longest_turn_s = REDIS_SOCKET_TIMEOUT_S + inspect.signature(backoff_s).parameters["cap_s"].default
    assert watchdog_s / 2 >= longest_turn_s
    assert one(service, "Restart") == "on-failure"


def test_only_a_configuration_error_is_not_restarted() -> None:
    # exit 2 (bad settings) cannot be fixed by a restart; Redis unreachable (69) may come back
    not_restarted = one(service_section(), "RestartPreventExitStatus").split()
    assert str(EXIT_USAGE) in not_restarted
    assert not {str(code) for code in (EXIT_FAILURE, EXIT_UNAVAILABLE, EXIT_SOFTWARE)} & set(not_restarted)


def test_stop_leaves_time_for_the_graceful_stop() -> None:
    service = service_section()
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    assert one(service, "KillMode") == "mixed"  # SIGTERM to the daemon only; it stops its children
    assert service.get("KillSignal", ["SIGTERM"]) == ["SIGTERM"]
    assert seconds(one(service, "TimeoutStopSec")) >= defaults.stop_timeout_s + defaults.preempt_grace_s


def test_memory_limit_leaves_the_governor_room_to_act() -> None:
    service = service_section()
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    limit, high = size_bytes(one(service, "MemoryMax")), size_bytes(one(service, "MemoryHigh"))
    # the kernel throttles above MemoryHigh: not before the governor's last level
    assert limit * defaults.emergency_percent / 100 <= high < limit
    # a slot killed by the kernel's OOM killer is the daemon's to handle, not a reason to stop the unit
    assert one(service, "OOMPolicy") == "continue"


def test_runs_the_installed_script_with_its_state_and_env_file() -> None:
    service = service_section()
    assert f"ExecStart={one(service, 'ExecStart')}" == INSTALLED_EXEC
    assert one(service, "StateDirectory") == "adaptive-scheduler"
    assert f"{ENV_PREFIX}STATE_DIR=%S/adaptive-scheduler" in service["Environment"]
    assert one(service, "EnvironmentFile") == "-/etc/adaptive-scheduler/env"


def test_env_example_names_real_settings_with_valid_values(monkeypatch: pytest.MonkeyPatch) -> None:
    examples = dict(
        re.findall(rf"^#({ENV_PREFIX}\w+)=(.*)$", ENV_EXAMPLE.read_text(encoding="utf-8"), re.MULTILINE)
    )
    assert len(examples) > 10
    examples.pop(f"{ENV_PREFIX}CONFIG")  # read by the loader, not a field
    fields = {f"{ENV_PREFIX}{field.upper()}" for field in Settings.model_fields}
    assert set(examples) <= fields, f"not settings: {set(examples) - fields}"
    for name in [name for name in os.environ if name.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name)
    for name, value in examples.items():
        monkeypatch.setenv(name, value.removeprefix("'").removesuffix("'"))  # systemd drops single quotes
    Settings(_env_file=None)  # type: ignore[call-arg]  # every example value is valid


# --- the drop-in that runs an application's code (systemd/examples/myapp.conf) ---------------------


def test_verify_prints_nothing_for_the_unit_with_the_app_dropin(unit_with_app_dropin: Path) -> None:
    done = analyze("verify", str(unit_with_app_dropin))
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
    # and verify did read the drop-in: a wrong key in it is reported (a drop-in it never found would
    # pass silently)
    dropin = unit_with_app_dropin.parent / f"{UNIT.name}.d" / APP_DROPIN.name
    dropin.write_text(dropin.read_text(encoding="utf-8") + "NoSuchKey=1\n", encoding="utf-8")
    done = analyze("verify", str(unit_with_app_dropin))
    assert f"{APP_DROPIN.name}:" in done.stderr and "NoSuchKey" in done.stderr, done.stderr


def test_security_exposure_with_the_app_dropin_stays_below_the_threshold(unit_with_app_dropin: Path) -> None:
    assert_exposure_below_threshold(unit_with_app_dropin)


def test_the_app_dropin_runs_the_apps_venv_and_code_with_its_config_file() -> None:
    dropin = service_section(APP_DROPIN)
    # the unit's ExecStart is cleared first, else systemd refuses a second one for Type=notify
    assert dropin["ExecStart"] == ["", APP_EXEC.removeprefix("ExecStart=")]
    assert one(dropin, "WorkingDirectory") == "/srv/myapp"  # the daemon's import path (python -m)
    assert one(dropin, "ReadWritePaths") == "/srv/myapp/var"
    assert (one(dropin, "DynamicUser"), one(dropin, "User")) == ("no", "myapp")
    # producers and the daemon share the Redis socket's group; a private user namespace would not map it
    assert (one(dropin, "SupplementaryGroups"), one(dropin, "PrivateUsers")) == ("redis", "no")


def test_the_app_config_example_is_valid_and_allows_only_the_apps_module(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [name for name in os.environ if name.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name)
    settings = load_settings(APP_CONFIG)
    assert settings.allowed_modules == ("myapp.jobs",)
    assert settings.redis_url is not None
    assert settings.redis_url.get_secret_value() == "unix:///run/redis/redis-server.sock"
    # the commented alternative in the drop-in, as systemd unquotes it, is the same setting
    (line,) = [
        line for line in APP_DROPIN.read_text(encoding="utf-8").splitlines() if "ALLOWED_MODULES" in line
    ]
    name, _, value = shlex.split(line.removeprefix("#Environment="))[0].partition("=")
    monkeypatch.setenv(name, value)
    assert Settings(_env_file=None).allowed_modules == ("myapp.jobs",)  # type: ignore[call-arg]
