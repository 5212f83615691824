"""Loading settings from their sources and turning validation errors into one readable line."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, TomlConfigSettingsSource
from pydantic_settings import SettingsError as SourceError

from settings.model import ENV_PREFIX, Settings


class SettingsError(ValueError):
    """A setting has a wrong value; the message is one line meant for the operator."""


def load_settings(config_path: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from overrides, environment, `.env`, the TOML file and defaults.

    Raises:
        SettingsError: a value is invalid or the config file is unreadable.
    """
    path = config_path or _env_config_path()
    if path is not None:
        _check_toml(path)
    try:
        return _with_toml(path)(**overrides)
    except ValidationError as exc:
        raise SettingsError(describe(exc)) from None
    except SourceError as exc:  # a list or table setting whose environment value is not JSON
        field = str(exc).split('"')[1] if '"' in str(exc) else "?"
        raise SettingsError(
            f"invalid setting {field} ({ENV_PREFIX}{field.upper()}): not valid JSON ({exc.__cause__})"
        ) from None


def describe(exc: ValidationError) -> str:
    """One line per wrong setting: its name, the value given and what is allowed."""
    lines = []
    for error in exc.errors(include_url=False):
        name = ".".join(str(part) for part in error["loc"]) or "settings"
        value = error.get("input")
        shown = "<hidden>" if "redis_url" in name else repr(value)
        if error["type"] == "extra_forbidden":
            lines.append(f"unknown setting {name!r} (see the configuration table in README.md)")
        elif isinstance(value, dict):  # a rule across fields, or across the fields of one table
            where = "settings" if name == "settings" else f"setting {name}"
            lines.append(f"invalid {where}: {error['msg']}")
        else:
            lines.append(f"invalid setting {name} ({ENV_PREFIX}{name.upper()}) = {shown}: {error['msg']}")
    return "; ".join(lines)


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
