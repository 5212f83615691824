"""Logging setup: loguru, configured once; stdlib logging (rq, apscheduler, redis) routed through it.

Under load one line per job can flood a terminal or journald (a task failing 1,000 times a second):
`StormGuard` lets each call site log at most `burst` lines per `window_s`, counts the rest, and says
how many it held back on the next line that site logs. Rare lines (level changes, breaker changes,
slot replacements) never reach the limit.
"""

from __future__ import annotations

import inspect
import logging
import sys
import time
from typing import Any

from loguru import logger

TEXT_FORMAT = "<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> <cyan>{name}</cyan> {message}"


class InterceptHandler(logging.Handler):
    """The loguru documentation's recipe: forward stdlib records to loguru with the right caller."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        frame, depth = inspect.currentframe(), 0
        while frame and (depth == 0 or frame.f_code.co_filename == logging.__file__):
            frame = frame.f_back
            depth += 1
        logger.opt(depth=depth, exception=record.exc_info).log(level, record.getMessage())


class StormGuard:
    """A loguru filter: at most `burst` records per call site per `window_s`; the others are counted."""

    def __init__(self, burst: int = 20, window_s: float = 10.0) -> None:
        self.burst = burst
        self.window_s = window_s
        self._sites: dict[tuple[str, int], list[float]] = {}  # site -> [window start, logged, held back]

    def __call__(self, record: dict[str, Any]) -> bool:
        site = (record["file"].path, record["line"])
        now = time.monotonic()
        state = self._sites.get(site)
        if state is None or now - state[0] >= self.window_s:
            held_back = int(state[2]) if state else 0
            self._sites[site] = [now, 1, 0]
            if held_back:
                window = f"{self.window_s:g} s"
                record["message"] += f" [{held_back} more like this in the last {window} held back]"
                record["extra"]["held_back"] = held_back
            return True
        if state[1] < self.burst:
            state[1] += 1
            return True
        state[2] += 1
        return False


def setup(level: str = "INFO", json_lines: bool = False) -> None:
    """Log to stderr (journald picks it up under systemd), as text or one JSON object per line."""
    logger.remove()
    guard = StormGuard()
    # diagnose=False: a traceback must not print variable values (job arguments, connection details)
    if json_lines:
        logger.add(sys.stderr, level=level, serialize=True, filter=guard, diagnose=False)  # type: ignore[arg-type]
    else:
        logger.add(
            sys.stderr,
            level=level,
            format=TEXT_FORMAT,
            colorize=None,
            filter=guard,
            diagnose=False,  # type: ignore[arg-type]
        )
    logging.basicConfig(handlers=[InterceptHandler()], level=logging.WARNING, force=True)
