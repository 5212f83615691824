"""Exit codes, and the one place a command's known failures become one line on stderr.

Each code tells the caller (systemd's `Restart=on-failure`, a script) what to do about it:

- 0: done.
- 1 (`EXIT_FAILURE`): a runtime failure, e.g. the embedded redis-server would not start. Restarted.
  Also `job`: the job failed, was shed, skipped or canceled; `status`: no daemon is alive.
- 2 (`EXIT_USAGE`): bad arguments or settings; restarting cannot help (`RestartPreventExitStatus=2`).
- 69 (`EXIT_UNAVAILABLE`, sysexits' EX_UNAVAILABLE): Redis cannot be reached (refused, timed out,
  TLS or credentials refused, no embedded Redis running). Restarted: Redis may come back.
- 70 (`EXIT_SOFTWARE`, EX_SOFTWARE): a bug escaped the daemon loop. Restarted.
- 124 (`EXIT_TIMEOUT`, as timeout(1) says it): `job --wait SECONDS` ran out of time before the job ended.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from adaptive_scheduler.errors import RedisUnavailable, SchedulerError, UsageError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
EXIT_UNAVAILABLE = 69
EXIT_SOFTWARE = 70
EXIT_TIMEOUT = 124


def reporting_failures(command: Callable[[], int]) -> int:
    """Run `command`; a known failure becomes one line and its exit code (above), no traceback."""
    try:
        return int(command())
    except UsageError as exc:
        return _say(exc, EXIT_USAGE)
    except RedisUnavailable as exc:
        return _say(exc, EXIT_UNAVAILABLE)
    except SchedulerError as exc:
        return _say(exc, EXIT_FAILURE)
    except Exception as exc:
        if not _unreachable(exc):
            raise
        return _say(f"cannot reach Redis: {exc}", EXIT_UNAVAILABLE)


def _unreachable(exc: Exception) -> bool:
    """A lost or refused connection (redis-py's own classes, if it was imported: `run` execs first)."""
    redis = sys.modules.get("redis")
    kinds = (ConnectionError, redis.ConnectionError, redis.TimeoutError) if redis else (ConnectionError,)
    return isinstance(exc, kinds)


def _say(message: object, code: int) -> int:
    print(f"adaptive-scheduler: {message}", file=sys.stderr)
    return code
