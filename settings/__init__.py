"""The daemon's settings: one pydantic-settings model, loaded from the environment, `.env` and TOML.

Precedence, highest first: keyword arguments, environment variables (prefix ``ASCHED_``), the ``.env``
file in the working directory, the TOML file named by ``--config`` or ``ASCHED_CONFIG``, then defaults.
A wrong value raises `SettingsError` with one line naming the setting, the value and what is allowed.

The names below are imported on first use, not with the package: the daemon process reads a frozen
snapshot (`adaptive_scheduler.settings.snapshot`) and must not import pydantic.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adaptive_scheduler.settings.load import SettingsError, load_settings
    from adaptive_scheduler.settings.model import ENV_PREFIX, PeriodicJob, Settings

_HOMES = {
    "ENV_PREFIX": "adaptive_scheduler.settings.model",
    "PeriodicJob": "adaptive_scheduler.settings.model",
    "Settings": "adaptive_scheduler.settings.model",
    "SettingsError": "adaptive_scheduler.settings.load",
    "load_settings": "adaptive_scheduler.settings.load",
}
__all__ = ["ENV_PREFIX", "PeriodicJob", "Settings", "SettingsError", "load_settings"]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'settings' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
