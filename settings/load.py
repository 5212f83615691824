"""Loading settings from their sources and turning validation errors into one readable line."""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from adaptive_scheduler.settings.model import ENV_PREFIX, Settings
from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, TomlConfigSettingsSource
from pydantic_settings import SettingsError as SourceError

# ASCHED_ variables that are not settings, each read by the project itself; any other ASCHED_ name that
# is not a setting is refused, so a typo (ASCHED_SLOT=4) cannot silently leave the default in force.
NON_SETTING_VARIABLES = {
    f"{ENV_PREFIX}CONFIG": "the TOML settings file, like --config (read by this loader)",
    f"{ENV_PREFIX}JOB_CHILD": "marks the processes a test job starts (tests/fixtures/jobs.py)",
    f"{ENV_PREFIX}TEST_CANARY": "file the canary module writes if imported (tests/fixtures/canary.py)",
    f"{ENV_PREFIX}LONG": "runs the long crash storm (tests/integration/test_crash_storm.py)",
    f"{ENV_PREFIX}KILLS": "kills in the long crash storm (tests/integration/test_crash_storm.py)",
    f"{ENV_PREFIX}FUZZ_EXAMPLES": "cases of the fuzz test (tests/integration/test_bad_input.py)",
    f"{ENV_PREFIX}NSPAWN_ROOT": "the container's root file system (systemd/nspawn_check.sh)",
}


class SettingsError(ValueError):
    """A setting has a wrong value; the message is one line meant for the operator."""


def load_settings(config_path: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from overrides, environment, `.env`, the TOML file and defaults.

    Raises:
        SettingsError: a value is invalid, an `ASCHED_` environment variable is not a setting, or the
            config file is unreadable.
    """
    path = config_path or _env_config_path()
    if path is not None:
        _check_toml(path)
    problems = unknown_variables(os.environ)
    try:
        settings = _with_toml(path)(**overrides)
    except ValidationError as exc:
        problems.append(describe(exc))
    except SourceError as exc:  # a list or table setting whose environment value is not JSON
        field = str(exc).split('"')[1] if '"' in str(exc) else "?"
        problems.append(
            f"invalid setting {field} ({ENV_PREFIX}{field.upper()}): not valid JSON ({exc.__cause__})"
        )
    if problems:
        raise SettingsError("; ".join(problems))
    return settings


def unknown_variables(names: Iterable[str]) -> list[str]:
    """One line per `ASCHED_` name that is neither a setting nor in `NON_SETTING_VARIABLES`.

    Names are compared case-insensitively, as the settings read them.
    """
    known = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    lines = []
    for name in sorted(names):
        upper = name.upper()
        if upper.startswith(ENV_PREFIX) and upper not in known and upper not in NON_SETTING_VARIABLES:
            hint = _closest(upper, [*known, *NON_SETTING_VARIABLES])
            lines.append(f"unknown environment variable {name}: not a setting{hint}")
    return lines


def describe(exc: ValidationError) -> str:
    """One line per wrong setting: its name, the value given and what is allowed."""
    lines = []
    for error in exc.errors(include_url=False):
        name = ".".join(str(part) for part in error["loc"]) or "settings"
        value = error.get("input")
        shown = "<hidden>" if "redis_url" in name else repr(value)
        if error["type"] == "extra_forbidden":
            lines.append(f"unknown setting {name!r}{_closest(name, Settings.model_fields, quote=True)}")
        elif isinstance(value, dict):  # a rule across fields, or across the fields of one table
            where = "settings" if name == "settings" else f"setting {name}"
            lines.append(f"invalid {where}: {error['msg']}")
        else:
            lines.append(f"invalid setting {name} ({ENV_PREFIX}{name.upper()}) = {shown}: {error['msg']}")
    return "; ".join(lines)


def _closest(name: str, candidates: Iterable[str], quote: bool = False) -> str:
    """' (did you mean X?)' for the closest candidate, else a pointer to the configuration table."""
    match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.8)
    if not match:
        return " (see the configuration table in README.md)"
    return f" (did you mean {match[0]!r}?)" if quote else f" (did you mean {match[0]}?)"


def _env_config_path() -> Path | None:
    value = os.environ.get(f"{ENV_PREFIX}CONFIG")
    return Path(value) if value else None


def _check_toml(path: Path) -> None:
    try:
        tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {path} is not valid TOML: {exc}") from None


def _with_toml(path: Path | None) -> type[Settings]:
    """A Settings subclass that also reads `path`, ranked below the environment and `.env`."""

    class FileSettings(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, dotenv_settings]
            if path is not None:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
            return tuple(sources)

    FileSettings.__name__ = "Settings"
    return FileSettings
