"""Process titles, so `ps` and `top -c` tell the daemon and its slots apart from other Pythons.

The daemon shows `adaptive-scheduler: daemon <id>` (the id `status` lists and RQ's worker name carries),
each slot `adaptive-scheduler: slot <index>`, the P0 lane `adaptive-scheduler: slot <index> (P0 lane)`
(the index its memory metrics use). setproctitle rewrites what /proc/<pid>/cmdline shows; the kernel's
15-character name (/proc/<pid>/comm, what plain `top` and `pgrep` without -f match) becomes
"adaptive-schedu".
"""

from __future__ import annotations

from setproctitle import setproctitle

PREFIX = "adaptive-scheduler: "


def set_title(role: str) -> None:
    """Show `adaptive-scheduler: <role>` as this process's command line."""
    setproctitle(PREFIX + role)


def slot_role(index: int, lane: bool) -> str:
    """A slot's role in its title: "slot 2", or "slot 2 (P0 lane)"."""
    return f"slot {index} (P0 lane)" if lane else f"slot {index}"
