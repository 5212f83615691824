"""Built-in tasks used by the demo, the tests and the benchmarks.

Producers enqueue them by dotted path with plain RQ, e.g.
``Queue("p1", connection=r, serializer=JSONSerializer).enqueue("tasks.builtin.add", 1, 2)``.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time

from tasks.registry import task
from tasks.sdk import context


@task()
def noop() -> None:
    """Does nothing: the unit of dispatch overhead."""


@task()
def add(a: float, b: float) -> float:
    """Returns a + b: a job with a result to read back."""
    return a + b


@task()
def echo(value: object) -> object:
    """Returns its argument unchanged."""
    return value


@task()
def sleep(seconds: float) -> float:
    """Sleeps, then returns how long it slept."""
    time.sleep(seconds)
    return seconds


@task(priority="P3", heartbeat=True)
def heartbeat() -> float:
    """A periodic liveness job: returns the time it ran."""
    return time.time()


@task()
def stamp(key_hint: str = "") -> float:
    """Returns the wall-clock time its first line ran: the end point of latency measurements."""
    return time.time()


@task()
def spin(seconds: float) -> int:
    """Burns CPU for `seconds` and returns how many loop turns it made."""
    deadline = time.monotonic() + seconds
    turns = 0
    while time.monotonic() < deadline:
        turns += 1
    return turns


@task()
def allocate(megabytes: int, hold_s: float = 0.0) -> int:
    """Allocates and touches `megabytes` MB, holds it for `hold_s`, returns the size."""
    block = bytearray(megabytes * 1024 * 1024)
    for offset in range(0, len(block), 4096):
        block[offset] = 1
    time.sleep(hold_s)
    return len(block)


_LEAKED: list[bytearray] = []


@task()
def leak(megabytes: int) -> int:
    """Keeps `megabytes` MB alive in its process after it returns (a leaky job); returns MB held."""
    block = bytearray(megabytes * 1024 * 1024)
    for offset in range(0, len(block), 4096):
        block[offset] = 1
    _LEAKED.append(block)
    return sum(len(b) for b in _LEAKED) // (1024 * 1024)


@task(preemptible=True)
def allocate_steps(megabytes: int, steps: int = 10, step_s: float = 0.1) -> int:
    """Allocates `megabytes` MB in `steps` steps, `step_s` apart, checkpointing between steps.

    Preempted, it resumes at the step it had reached (re-allocating what it held: memory is not
    state). Returns the number of steps done across all runs.
    """
    ctx = context()
    done = ctx.resume_state or 0
    blocks = []
    for _ in range(done, steps):
        block = bytearray(megabytes * 1024 * 1024 // steps)
        for offset in range(0, len(block), 4096):
            block[offset] = 1
        blocks.append(block)
        time.sleep(step_s)
        done += 1
        ctx.checkpoint(done)
    return done


@task(preemptible=True)
def long_sum(n: int, chunk: int = 100_000, pause_s: float = 0.0) -> dict[str, int]:
    """Sums 0..n-1 in chunks, checkpointing after each; returns the sum and how many runs it took."""
    ctx = context()
    state = ctx.resume_state or {"i": 0, "total": 0, "runs": 0}
    state["runs"] += 1
    while state["i"] < n:
        stop = min(n, state["i"] + chunk)
        state["total"] += sum(range(state["i"], stop))
        state["i"] = stop
        time.sleep(pause_s)
        ctx.checkpoint(state)
    return {"total": state["total"], "runs": state["runs"]}


@task()
def fail(message: str = "failed on purpose") -> None:
    """Raises RuntimeError(message): a job that fails normally."""
    raise RuntimeError(message)


@task()
def exit_process(code: int = 3) -> None:
    """Ends its own process with os._exit: a job that kills its slot."""
    os._exit(code)


@task()
def kill_self() -> None:
    """Sends SIGKILL to its own process."""
    os.kill(os.getpid(), signal.SIGKILL)


@task()
def segfault() -> None:
    """Dereferences a NULL pointer: a job that crashes its slot with SIGSEGV."""
    ctypes.string_at(0)


@task()
def fail_while(path: str) -> str:
    """Fails while the file at `path` exists, then succeeds: a flaky dependency, for breaker tests."""
    if os.path.exists(path):
        raise RuntimeError(f"{path} exists: the dependency is down")
    return "ok"


@task()
def reserve(megabytes: int, hold_s: float = 1.0) -> int:
    """Mallocs `megabytes` MB without touching them (calloc), holds them `hold_s`, frees them.

    RSS hardly moves; malloc's count does: a job whose memory the heap reading sees before RSS.
    """
    libc = ctypes.CDLL(None)
    libc.calloc.restype = ctypes.c_void_p
    block = libc.calloc(megabytes, 1024 * 1024)
    try:
        time.sleep(hold_s)
    finally:
        libc.free(ctypes.c_void_p(block))
    return megabytes


@task()
def record_run(path: str, seconds: float = 0.0) -> float:
    """Appends "start <job id> <daemon pid> <unix s>" to the file at `path`, sleeps `seconds`, then
    appends the same line with "end".

    Counts how many times a job began and completed in a slot, whatever Redis ends up saying (crash
    tests). One short O_APPEND write per line, so lines from concurrent slots do not interleave.
    """
    job_id, daemon = context().job_id or "detached", os.getppid()
    _append_line(path, f"start {job_id} {daemon} {time.time():.6f}")
    time.sleep(seconds)
    _append_line(path, f"end {job_id} {daemon} {time.time():.6f}")
    return seconds


def _append_line(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


_SLEEPER = "import time; time.sleep(600)"
_PARENT = (
    "import subprocess, sys, time; "
    f"p = subprocess.Popen([sys.executable, '-c', {_SLEEPER!r}]); print(p.pid, flush=True); time.sleep(600)"
)
_ORPHANER = (
    f"import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', {_SLEEPER!r}]); print(p.pid)"
)


@task()
def spawn_children(pids_path: str, then: str = "return", seconds: float = 600.0) -> int:
    """Starts processes that outlive it unless stopped: two `sleep 600`, a Python child with a Python
    grandchild, and a Python child that exits at once, leaving its Python grandchild orphaned.

    Every one carries ASCHED_JOB_CHILD=<job id> in its environment and its pid goes to `pids_path`
    (one per line), so a test can find any that leaked. Then it returns ("return"), sleeps `seconds`
    ("sleep"), or ends its own process ("exit"). Returns how many processes it started.
    """
    import subprocess
    import sys

    env = {**os.environ, "ASCHED_JOB_CHILD": context().job_id or "detached"}
    sleepers = [subprocess.Popen(["sleep", "600"], env=env) for _ in range(2)]
    parent = subprocess.Popen([sys.executable, "-c", _PARENT], env=env, stdout=subprocess.PIPE)
    orphaner = subprocess.Popen([sys.executable, "-c", _ORPHANER], env=env, stdout=subprocess.PIPE)
    assert parent.stdout is not None and orphaner.stdout is not None
    grandchildren = [int(parent.stdout.readline()), int(orphaner.stdout.readline())]
    orphaner.wait()
    pids = [p.pid for p in (*sleepers, parent, orphaner)] + grandchildren
    with open(pids_path, "w") as out:
        out.write("".join(f"{pid}\n" for pid in pids))
    if then == "sleep":
        time.sleep(seconds)
    elif then == "exit":
        os._exit(9)
    return len(pids)


@task()
def ignore_sigterm(seconds: float) -> float:
    """Ignores SIGTERM, then sleeps `seconds`: a job that a polite stop cannot end."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(seconds)
    return seconds


@task()
def ignore_preemption_signal() -> None:
    """Sets SIGUSR1 (the daemon's "checkpoint now" signal) to be ignored, and returns: a job that
    leaves its own signal handling behind in a pool slot."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)


@task(timeout=1.0)
def bounded_sleep(seconds: float) -> float:
    """Sleeps `seconds`; its task timeout (1 s) applies when the job sets no job_timeout."""
    time.sleep(seconds)
    return seconds
