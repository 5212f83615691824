"""The checkpoint format kept in a job's hash (`asched_checkpoint`): versioned JSON (pure).

    {"v": 1, "state": <the JSON the task passed to ctx.checkpoint>}

A newer version than this code knows is refused with an explanation rather than misread.
"""

from __future__ import annotations

import json
from typing import Any

from adaptive_scheduler.errors import PayloadError
from adaptive_scheduler.payload import MAX_NESTING, nests_deeper

VERSION = 1


class CheckpointError(PayloadError):
    """A stored checkpoint cannot be read; the job fails with this reason instead of running wrong."""


def encode(state_json: str) -> str:
    """Wrap a task's state (already JSON text) in the versioned envelope."""
    return f'{{"v": {VERSION}, "state": {state_json}}}'


def decode(raw: bytes | str | None) -> Any:
    """The task state in a stored checkpoint, or None when there is none.

    Raises:
        CheckpointError: malformed, or written by a newer version.
    """
    if not raw:
        return None
    try:
        envelope = json.loads(raw)
        version, state = envelope["v"], envelope["state"]
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise CheckpointError(f"the job's checkpoint is unreadable: {exc!r}") from None
    if version != VERSION:
        raise CheckpointError(
            f"the job's checkpoint has format v{version}; this daemon reads v{VERSION}: "
            "run it on a daemon of the version that preempted it"
        )
    if nests_deeper([state], MAX_NESTING):  # the daemon pickles it for the slot: that recursion has a limit
        raise CheckpointError(f"the job's checkpoint nests deeper than {MAX_NESTING} levels")
    return state
