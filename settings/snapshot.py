"""Validated settings as plain Python values, for the daemon process, which never imports pydantic.

pydantic and pydantic-settings are needed once, to read and validate the settings, and then never
again; yet imported they held about 11 MiB of the idle footprint (heap that every slot shares, and
their compiled core's pages). So `adaptive-scheduler run` validates in a launcher process, freezes
the result with `freeze`, and execs the daemon (`adaptive_scheduler.daemon_main`), which reads it back: same
attribute names, same values, no pydantic classes (this module imports none).
"""

from __future__ import annotations

from typing import Any


class RedisUrlText:
    """`redis_url_text()`, shared by the pydantic model and its snapshot."""

    redis_url: Any

    def redis_url_text(self) -> str | None:
        """The Redis URL with its secret, for connecting; never log this."""
        return self.redis_url.get_secret_value() if self.redis_url else None


class Secret:
    """A secret string that does not show itself in a repr or a log line (like pydantic's SecretStr)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"


class Snapshot(RedisUrlText):
    """Read-only attributes named like the model's fields."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"settings are read-only (tried to set {name!r})")

    def __repr__(self) -> str:
        return f"Snapshot({self.__dict__!r})"


def freeze(value: Any) -> Any:
    """`value` with every pydantic object replaced by a plain one, recursively.

    Models become `Snapshot`s, secrets `Secret`s, int subclasses (ByteSize) ints; containers are
    rebuilt. Duck-typed, so that this module does not import pydantic.
    """
    fields = getattr(type(value), "model_fields", None)
    if fields is not None:
        return Snapshot({name: freeze(getattr(value, name)) for name in fields})
    if hasattr(value, "get_secret_value"):
        return Secret(value.get_secret_value())
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, tuple | list):
        return type(value)(freeze(item) for item in value)
    if isinstance(value, dict):
        return {key: freeze(item) for key, item in value.items()}
    if type(value).__module__.partition(".")[0] in {"pydantic", "pydantic_core", "pydantic_settings"}:
        raise TypeError(f"cannot freeze a {type(value).__name__} setting without pydantic")
    return value
