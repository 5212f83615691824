"""Logging setup: loguru, configured once; stdlib logging (rq, apscheduler, redis) routed through it."""

from __future__ import annotations

import inspect
import logging
import sys

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


def setup(level: str = "INFO", json_lines: bool = False) -> None:
    """Log to stderr (journald picks it up under systemd), as text or one JSON object per line."""
    logger.remove()
    if json_lines:
        logger.add(sys.stderr, level=level, serialize=True)
    else:
        logger.add(sys.stderr, level=level, format=TEXT_FORMAT, colorize=None)
    logging.basicConfig(handlers=[InterceptHandler()], level=logging.WARNING, force=True)
