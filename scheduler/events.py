"""The daemon's one wait: a poll set of descriptors, each with the handler to run when it is readable."""

from __future__ import annotations

import select
from collections.abc import Callable

Handler = Callable[[], None]


class Poller:
    """`select.poll` plus a handler per descriptor.

    A descriptor must be removed before it is closed: its number may be reused at once by the next
    pipe or socket, and its old handler would then run for the new owner.
    """

    def __init__(self) -> None:
        self._poll = select.poll()
        self._handlers: dict[int, Handler] = {}

    def add(self, fd: int, handler: Handler) -> None:
        self._handlers[fd] = handler
        self._poll.register(fd, select.POLLIN)

    def remove(self, fd: int) -> None:
        if self._handlers.pop(fd, None) is not None:
            self._poll.unregister(fd)

    def wait(self, timeout_s: float) -> None:
        """Block until a descriptor is readable or `timeout_s` passes, then run the handlers.

        Handlers are looked up before any runs, and one removed by an earlier handler is skipped.
        """
        ready = [(fd, self._handlers.get(fd)) for fd, _ in self._poll.poll(timeout_s * 1000)]
        for fd, handler in ready:
            if handler is not None and self._handlers.get(fd) is handler:
                handler()
