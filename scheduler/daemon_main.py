"""The daemon process proper, started by `adaptive-scheduler run` with an exec (same pid).

The launcher (`adaptive_scheduler.cli`) reads and validates the settings with pydantic, freezes them
into plain values (`adaptive_scheduler.settings.snapshot`) and hands them over in an anonymous
in-memory file whose descriptor survives the exec. This process never imports pydantic, so neither
the daemon nor the slots forked from it hold its memory (about 11 MiB of the idle footprint); and
the exec keeps the pid, so systemd, signals and notify see one process.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
from typing import TYPE_CHECKING, NoReturn

from adaptive_scheduler.exits import reporting_failures
from adaptive_scheduler.settings.snapshot import freeze

if TYPE_CHECKING:
    from adaptive_scheduler.settings import Settings


def exec_daemon(settings: Settings, demo: bool, until_idle: bool) -> NoReturn:
    """Replace this process with the daemon, running on `settings` (validated)."""
    fd = os.memfd_create("adaptive-scheduler-settings")  # close-on-exec unless made inheritable
    with os.fdopen(fd, "wb", closefd=False) as file:
        pickle.dump(freeze(settings), file)
    os.lseek(fd, 0, os.SEEK_SET)
    os.set_inheritable(fd, True)
    flags = [flag for flag, on in (("--demo", demo), ("--until-idle", until_idle)) if on]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "adaptive_scheduler.daemon_main", str(fd), *flags])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="adaptive_scheduler.daemon_main", description=__doc__)
    parser.add_argument("settings_fd", type=int, help="descriptor of the frozen settings")
    parser.add_argument("--demo", action="store_true")
    parser.add_argument("--until-idle", action="store_true")
    args = parser.parse_args(argv)
    with os.fdopen(args.settings_fd, "rb") as file:  # closed here: neither slots nor jobs inherit it
        settings = pickle.load(file)
    from adaptive_scheduler import logs  # here: the launcher imports this module too, and never logs
    from adaptive_scheduler.service import serve

    logs.setup(settings.log_level, settings.log_json)
    return reporting_failures(lambda: serve(settings, demo=args.demo, until_idle=args.until_idle))


if __name__ == "__main__":
    sys.exit(main())
