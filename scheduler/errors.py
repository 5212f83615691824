"""The daemon's error tree, grouped by what the caller does about each error."""

from __future__ import annotations


class SchedulerError(Exception):
    """Root of every error the daemon raises on purpose."""


class PayloadError(SchedulerError):
    """A job's payload cannot be run as given; the job fails with this message as its reason."""


class TaskNotAllowed(PayloadError):
    """The job names a function outside the allowlist; nothing of it was imported."""


class StartupError(SchedulerError):
    """The daemon cannot start (Redis unreachable, no redis-server binary, ...); exit non-zero."""


class UsageError(SchedulerError):
    """Bad command-line input; the message says what to type instead (exit code 2)."""
