"""Memory readings: what the daemon and its slots use, against what budget.

Budget, first found: the `memory_budget` setting; the memory limit of the daemon's own cgroup (v2
`memory.max`, v1 `memory.limit_in_bytes`: under systemd, `MemoryMax=` is the real limit); the host's
RAM. Use: the daemon's RSS plus, for each slot, what its RSS grew by since it was forked and ready.
Slots are forked from the daemon and share its pages, so adding their whole RSS would count those
pages three times; their growth is what their jobs added. When the budget is a cgroup limit, the
cgroup's own usage (minus reclaimable page cache) is taken too, and the larger of the two counts.
The heap is counted the same way: the daemon's malloc in use plus each slot's growth (`heap`).

    pressure % = 100 * max(used, heap) / budget

The kernel's memory PSI (share of the last 10 s in which tasks stalled waiting for memory: the
cgroup's v2 `memory.pressure`, else the host's `/proc/pressure/memory`) is read too and reported, but
not part of the formula: stalls show a shortage once it hurts, the levels must act before it does.

Each reading costs one small /proc read per process (`/proc/<pid>/statm`, what psutil's RSS reads, in
a few µs rather than psutil's ~17; it runs ten times a second, idle or not), a µs per heap and one
pread of the PSI file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from adaptive_scheduler.governor.heap import HeapCell, malloc_in_use

UNLIMITED = 1 << 62  # cgroup v1 writes 9223372036854771712 for "no limit"
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True, slots=True)
class MemorySample:
    """One reading. Bytes throughout."""

    used: int
    budget: int
    daemon_rss: int
    slot_growth: dict[int, int] = field(default_factory=dict)  # slot index -> RSS added by its job
    slot_rss: dict[int, int] = field(default_factory=dict)  # slot index -> RSS
    budget_source: str = "settings"
    heap: int = 0  # the daemon's malloc in use plus what each slot's grew by
    daemon_heap: int = 0
    slot_heap: dict[int, int] = field(default_factory=dict)  # slot index -> malloc in use
    psi: Psi | None = None  # None where the kernel has no PSI
    slot_heap_growth: dict[int, int] = field(default_factory=dict)  # slot index -> malloc added
    slot_pid: dict[int, int] = field(default_factory=dict)  # slot index -> the process read
    oom_kills: int | None = None  # the kernel's OOM kills so far, host-wide (None: not readable)

    def growth(self, slot: int, pid: int) -> tuple[int, int]:
        """What slot `slot` (process `pid`) has added since it started, as (RSS, malloc) growth; zeros
        when this reading is of the process it replaced."""
        if self.slot_pid.get(slot) != pid:
            return 0, 0
        return self.slot_growth.get(slot, 0), self.slot_heap_growth.get(slot, 0)

    @property
    def percent(self) -> float:
        return 100.0 * max(self.used, self.heap) / self.budget


@dataclass(frozen=True, slots=True)
class Psi:
    """Memory pressure stall information, avg10: % of the last 10 s in which some (or all) non-idle
    tasks waited for memory (reclaim, refaults)."""

    some: float
    full: float


def parse_psi(text: str) -> Psi:
    """A PSI file's avg10 figures ("some avg10=0.12 avg60=... total=..." and the "full" line)."""
    found = {}
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        fields = dict(item.split("=", 1) for item in rest.split())
        found[kind] = float(fields["avg10"])
    return Psi(found["some"], found.get("full", 0.0))


@dataclass(frozen=True, slots=True)
class CgroupFiles:
    """Where the daemon's cgroup keeps its memory limit and usage."""

    limit: Path
    usage: Path
    stat: Path
    cache_key: str  # the memory.stat line of reclaimable file cache
    pressure: Path | None = None  # v2 memory.pressure (PSI of this cgroup)


def parse_limit(text: str) -> int | None:
    """A cgroup limit file's value in bytes; None for "no limit" ('max', or v1's huge number)."""
    value = text.strip()
    if value == "max" or not value:
        return None
    number = int(value)
    return None if number >= UNLIMITED else number


def parse_stat(text: str, key: str) -> int:
    """One counter of a memory.stat file (0 when absent)."""
    for line in text.splitlines():
        name, _, number = line.partition(" ")
        if name == key:
            return int(number)
    return 0


def find_cgroup(proc_cgroup: str, root: Path = Path("/sys/fs/cgroup")) -> CgroupFiles | None:
    """The memory files of the cgroup named in /proc/self/cgroup text, v2 first, then v1."""
    for line in proc_cgroup.splitlines():
        _, controllers, path = line.split(":", 2)
        relative = path.lstrip("/")
        if controllers == "" and (root / relative / "memory.max").exists():
            base = root / relative
            return CgroupFiles(
                base / "memory.max",
                base / "memory.current",
                base / "memory.stat",
                "inactive_file",
                base / "memory.pressure",
            )
        if "memory" in controllers.split(","):
            for base in (root / "memory" / relative, root / "memory"):
                if (base / "memory.limit_in_bytes").exists():
                    return CgroupFiles(
                        base / "memory.limit_in_bytes",
                        base / "memory.usage_in_bytes",
                        base / "memory.stat",
                        "total_inactive_file",
                    )
    return None


class Monitor:
    """Takes `MemorySample`s of the daemon and its slots."""

    def __init__(self, budget_bytes: int | None) -> None:
        self._statm = os.open("/proc/self/statm", os.O_RDONLY)  # read again at offset 0 each sample
        self._cgroup = _own_cgroup()
        self._slots: dict[int, tuple[int, int, HeapCell | None, int]] = {}
        # slot index -> (pid, base RSS, heap cell, base heap): bases are read when the slot is ready
        cgroup_limit = parse_limit(self._cgroup.limit.read_text()) if self._cgroup else None
        if budget_bytes:
            self.budget, self.budget_source = budget_bytes, "settings"
        elif cgroup_limit:
            self.budget, self.budget_source = cgroup_limit, f"cgroup {self._cgroup.limit}"  # type: ignore[union-attr]
        else:
            self.budget, self.budget_source = psutil.virtual_memory().total, "host RAM"
        self._use_cgroup = self.budget_source.startswith("cgroup")
        self.psi_source = _psi_file(self._cgroup)
        # kept open and read with pread: opening the file each sample costs more than the rest of a reading
        self._psi_fd = os.open(self.psi_source, os.O_RDONLY | os.O_CLOEXEC) if self.psi_source else None
        self._vmstat_fd = _open_quietly(Path("/proc/vmstat"))

    def track(self, index: int, pid: int, heap: HeapCell | None = None) -> None:
        """Start reading slot `index` (process `pid`, just ready: its RSS and heap now are its base)."""
        try:
            base_heap = heap.read() if heap is not None else 0
            self._slots[index] = (pid, rss_bytes(pid), heap, base_heap)
        except OSError:  # the process has gone
            self._slots.pop(index, None)

    def untrack(self, index: int) -> None:
        self._slots.pop(index, None)

    def slot_growth_now(self, index: int, pid: int) -> tuple[int, int]:
        """Slot `index`'s (RSS, malloc) growth read now, not at the last sample; zeros if not tracked."""
        tracked = self._slots.get(index)
        if tracked is None or tracked[0] != pid:
            return 0, 0
        _, base, cell, base_heap = tracked
        try:
            rss = rss_bytes(pid)
        except OSError:
            return 0, 0
        heap = cell.read() - base_heap if cell is not None else 0
        return max(0, rss - base), max(0, heap)

    def sample(self) -> MemorySample:
        daemon_rss = int(os.pread(self._statm, 256, 0).split()[1]) * PAGE_BYTES
        daemon_heap = malloc_in_use()
        growth: dict[int, int] = {}
        rss: dict[int, int] = {}
        slot_heap: dict[int, int] = {}
        heap_growth: dict[int, int] = {}
        pids: dict[int, int] = {}
        heap = daemon_heap
        for index, (pid, base, cell, base_heap) in list(self._slots.items()):
            try:
                rss[index] = rss_bytes(pid)
            except OSError:  # the process has gone
                continue
            growth[index] = max(0, rss[index] - base)
            pids[index] = pid
            if cell is not None:
                slot_heap[index] = cell.read()
                heap_growth[index] = max(0, slot_heap[index] - base_heap)
                heap += heap_growth[index]
        used = daemon_rss + sum(growth.values())
        if self._use_cgroup and self._cgroup is not None:
            used = max(used, self._cgroup_usage(self._cgroup))
        return MemorySample(
            used,
            self.budget,
            daemon_rss,
            growth,
            rss,
            self.budget_source,
            heap,
            daemon_heap,
            slot_heap,
            self._read_psi(),
            heap_growth,
            pids,
            self.oom_kills(),
        )

    def oom_kills(self) -> int | None:
        """How many processes the kernel's OOM killer has killed since boot, on the whole host (its
        `oom_kill` count in /proc/vmstat, which memory cgroups' kills raise too); None if unreadable."""
        if self._vmstat_fd is None:
            return None
        try:
            return parse_oom_kills(os.pread(self._vmstat_fd, 1 << 16, 0))
        except (OSError, ValueError):
            return None

    def _read_psi(self) -> Psi | None:
        if self._psi_fd is None:
            return None
        try:
            return parse_psi(os.pread(self._psi_fd, 512, 0).decode())
        except (OSError, ValueError, KeyError):
            return None

    @staticmethod
    def _cgroup_usage(files: CgroupFiles) -> int:
        usage = int(files.usage.read_text())
        return usage - parse_stat(files.stat.read_text(), files.cache_key)


def parse_oom_kills(vmstat: bytes) -> int | None:
    """The `oom_kill` line of /proc/vmstat (kernels since 4.13); None where it has none."""
    at = vmstat.find(b"\noom_kill ")
    if at < 0:
        return None
    return int(vmstat[at + 10 : vmstat.index(b"\n", at + 1)])


def rss_bytes(pid: int) -> int:
    """The resident set of process `pid`, as psutil reads it. OSError once it is gone."""
    fd = os.open(f"/proc/{pid}/statm", os.O_RDONLY)
    try:
        return int(os.read(fd, 256).split()[1]) * PAGE_BYTES
    finally:
        os.close(fd)


def _open_quietly(path: Path) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def _own_cgroup() -> CgroupFiles | None:
    try:
        return find_cgroup(Path(f"/proc/{os.getpid()}/cgroup").read_text())
    except (OSError, ValueError):
        return None


def _psi_file(cgroup: CgroupFiles | None, host: Path = Path("/proc/pressure/memory")) -> Path | None:
    """The PSI file to read: the cgroup's own (v2), else the host's; None without PSI (or unreadable)."""
    for candidate in (cgroup.pressure if cgroup else None, host):
        if candidate is not None:
            try:
                parse_psi(candidate.read_text())
            except (OSError, ValueError, KeyError):
                continue
            return candidate
    return None
