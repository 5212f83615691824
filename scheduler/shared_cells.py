"""Numbers the daemon and its forked slots share through memory, each read and written whole.

`struct.pack_into` clears a field before it writes the value's bytes one at a time, and
`struct.unpack_from` reads them one at a time: a process reading a field while another writes it can
see zero or a mix of two values. The daemon's pulse read as zero made a slot take its daemon for
silent since boot and kill itself, and its job, which had just finished (the job then ran again).
A memoryview cast to an 8-byte format copies each value with one aligned 8-byte load or store (the
cells start a page, so they are aligned), which x86-64 and arm64 do as a single access: a reader sees
the old value or the new one, never a mix.
"""

from __future__ import annotations

import mmap
from typing import Literal

CELL_BYTES = 8


class SharedCells:
    """`count` numbers in an anonymous shared page, made before the fork so that both sides see it:
    floats (`"d"`) or signed 64-bit integers (`"q"`)."""

    def __init__(self, count: int, kind: Literal["d", "q"]) -> None:
        self._page = mmap.mmap(-1, count * CELL_BYTES)  # anonymous and shared (MAP_SHARED)
        self._cells = memoryview(self._page).cast(kind)

    def __getitem__(self, index: int) -> float:
        return self._cells[index]  # type: ignore[no-any-return]

    def __setitem__(self, index: int, value: float) -> None:
        self._cells[index] = value

    def close(self) -> None:
        self._cells.release()  # the page cannot close while a view of it exists
        self._page.close()
