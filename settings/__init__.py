"""The daemon's settings: one pydantic-settings model, loaded from the environment, `.env` and TOML.

Precedence, highest first: keyword arguments, environment variables (prefix ``ASCHED_``), the ``.env``
file in the working directory, the TOML file named by ``--config`` or ``ASCHED_CONFIG``, then defaults.
A wrong value raises `SettingsError` with one line naming the setting, the value and what is allowed.
"""

from __future__ import annotations

from settings.load import SettingsError, load_settings
from settings.model import ENV_PREFIX, PeriodicJob, Settings

__all__ = ["ENV_PREFIX", "PeriodicJob", "Settings", "SettingsError", "load_settings"]
