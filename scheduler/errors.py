"""The daemon's error tree, grouped by what the caller does about each error."""

from __future__ import annotations


class SchedulerError(Exception):
    """Root of every error the daemon raises on purpose."""


class PayloadError(SchedulerError):
    """A job's payload cannot be run as given; the job fails with this message as its reason."""


class TaskNotAllowed(PayloadError):
    """The job names a function outside the allowlist; nothing of it was imported."""


class StartupError(SchedulerError):
    """The daemon cannot start (no redis-server binary, the embedded one did not answer, ...); exit code 1."""


class UsageError(SchedulerError):
    """Bad command-line input; the message says what to type instead (exit code 2)."""


class ConfigError(UsageError):
    """A setting found wrong only at start-up (an allowed module that does not import, a periodic job
    naming a task that may not run); exit code 2, like a value validation refused: a restart cannot help."""


class JobNotFound(SchedulerError):
    """`job ID` names no job hash: never enqueued there, or expired after its TTL; exit code 1."""


class RedisUnavailable(SchedulerError):
    """No Redis to talk to (no embedded one running and none configured); exit code 69: retry later."""
