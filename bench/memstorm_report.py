"""What bench.memstorm measured, turned into numbers: the table rows, the markdown and JSON results and
the timeline chart. Pure but for writing the result files; the harness lives in bench/memstorm.py.

Definitions (per system and scenario; "plain jobs" are the touch() jobs, the P0 markers apart):
- settle s: from the first enqueue to the last job's end (finished, failed or canceled); a run that
  hits the timeout counts its unsettled jobs as lost and shows ">timeout";
- goodput: nominal seconds of the finished plain jobs over that makespan (1.0 = one job's worth of
  work done every second; the serial ideal runs them one at a time);
- wasted s: run time of executions that never ended (killed, stopped or failed), to their last
  progress line (touch() logs 20 steps);
- stopped runs: such executions; re-runs: executions minus distinct jobs started;
- P0 wait: started_at minus enqueued_at of the markers, from RQ's job hashes.
"""

from __future__ import annotations

import json
import re
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

Row = dict[str, float | int | str]


@dataclass(frozen=True, slots=True)
class Spec:
    """One plain job: `func(mib, seconds)` on `queue` (`func`: touch, or small, its twin under another
    name, for jobs an application would write as a separate function)."""

    queue: str
    mib: int
    seconds: float
    func: str = "touch"


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    jobs: tuple[Spec, ...]

    @property
    def serial_ideal_s(self) -> float:
        """Every plain job run one at a time, back to back: the makespan that needs no packing at all."""
        return sum(spec.seconds for spec in self.jobs)


@dataclass(frozen=True, slots=True)
class JobFacts:
    """A job's hash fields as read at the end (unix seconds)."""

    status: str
    ended: bool
    enqueued_at: float | None
    started_at: float | None
    ended_at: float | None


@dataclass(frozen=True, slots=True)
class Execution:
    """One run of touch() from its run-log lines; `last` is its last line, `ended` whether it returned."""

    job_id: str
    started: float
    last: float
    ended: bool
    via: str


@dataclass
class Trial:
    """One system through one scenario: what the harness saw and what Redis held at the end."""

    system: str
    scenario: Scenario
    round_no: int
    t0: float = 0.0  # unix s of the first enqueue
    settled_at: float | None = None  # unix s at which every job was seen ended
    oom_kills: int = 0
    plain_ids: list[str] = field(default_factory=list)
    marker_ids: list[str] = field(default_factory=list)
    samples: list[tuple[float, float]] = field(default_factory=list)  # (unix s, usage %)
    jobs: dict[str, JobFacts] = field(default_factory=dict)
    run_log: str = ""

    def executions(self) -> list[Execution]:
        return parse_run_log(self.run_log)

    def settle_s(self) -> float:
        """Seconds from the first enqueue to the last end (the poll time if an end time is missing)."""
        if self.settled_at is None:
            return (max(t for t, _ in self.samples) if self.samples else time.time()) - self.t0
        ends = [facts.ended_at for facts in self.jobs.values() if facts.ended_at is not None]
        last = max(ends) if ends and len(ends) == len(self.jobs) else self.settled_at
        return last - self.t0

    def brief(self) -> str:
        row = summarise(self)
        return (
            f"{row['finished']}/{len(self.plain_ids)} finished, {row['failed']} failed, {row['parked']} "
            f"parked, {row['OOM kills']} OOM kills, settled {row['settle s']} s"
        )


RECORD = re.compile(r"(start|beat|end) (\S+) (\S+) (\d+\.\d+)(?: (rq|tag))?")


def parse_run_log(text: str) -> list[Execution]:
    """Executions in start order from touch()'s lines (see bench/plain_jobs.py); lines in time order."""
    starts: dict[str, tuple[str, float, str]] = {}  # execution -> (job id, started, via)
    last: dict[str, float] = {}
    ended: set[str] = set()
    # records, not lines: a process OOM-killed inside its write can leave one without its newline
    for kind, job_id, execution, at, via in RECORD.findall(text):
        if kind == "start":
            starts[execution] = (job_id, float(at), via or "?")
        last[execution] = float(at)
        if kind == "end":
            ended.add(execution)
    runs = [Execution(job, started, last[x], x in ended, via) for x, (job, started, via) in starts.items()]
    return sorted(runs, key=lambda run: run.started)


def quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, int(len(ordered) * q + 0.999) - 1)]


def summarise(trial: Trial) -> Row:
    """One table row: outcomes, OOM kills, times, waste and P0 waits of one trial."""
    plain = [trial.jobs[i] for i in trial.plain_ids]
    nominal = dict(zip(trial.plain_ids, (spec.seconds for spec in trial.scenario.jobs), strict=True))
    finished = [i for i in trial.plain_ids if trial.jobs[i].status == "finished"]
    makespan = trial.settle_s()
    runs = [e for e in trial.executions() if e.job_id in nominal]
    stopped = [e for e in runs if not e.ended]
    markers = [trial.jobs[i] for i in trial.marker_ids]
    waits = p0_waits_ms(trial)
    lost = sum(1 for facts in plain if not facts.ended)
    serial = trial.scenario.serial_ideal_s
    return {
        "system": trial.system,
        "round": trial.round_no,
        "finished": len(finished),
        "failed": sum(1 for facts in plain if facts.status == "failed"),
        "parked": sum(1 for facts in plain if facts.status == "canceled"),
        "lost": lost,
        "OOM kills": trial.oom_kills,
        "settle s": f">{makespan:.0f}" if trial.settled_at is None else round(makespan, 1),
        "goodput": round(sum(nominal[i] for i in finished) / makespan, 2),
        "wasted s": round(sum(e.last - e.started for e in stopped), 1),
        "stopped runs": len(stopped),
        "re-runs": len(runs) - len({e.job_id for e in runs}),
        "P0 done": f"{sum(1 for m in markers if m.status == 'finished')}/{len(markers)}",
        "P0 p50 ms": round(quantile(waits, 0.5) or 0.0, 1),
        "P0 p99 ms": round(quantile(waits, 0.99) or 0.0, 1),
        "makespan / serial": round(makespan / serial, 2) if serial else "-",
    }


def p0_waits_ms(trial: Trial) -> list[float]:
    """The P0 markers' waits (start minus enqueue, from RQ's job hashes), ms."""
    markers = [trial.jobs[i] for i in trial.marker_ids]
    return [1000 * (m.started_at - m.enqueued_at) for m in markers if m.started_at and m.enqueued_at]


def pooled_p0_rows(by_name: dict[str, list[Trial]]) -> list[Row]:
    """P0 waits pooled over rounds, per scenario and system, with the p99 against the calm run's."""
    pooled: dict[tuple[str, str], list[float]] = {}
    for name, group in by_name.items():
        for trial in group:
            pooled.setdefault((name, trial.system), []).extend(p0_waits_ms(trial))
    calm = {system: quantile(w, 0.99) for (name, system), w in pooled.items() if name.startswith("calm")}
    rows: list[Row] = []
    for (name, system), waits in pooled.items():
        p99, base = quantile(waits, 0.99), calm.get(system)
        ratio = f"{p99 / base:.2f}x" if p99 is not None and base else "-"
        rows.append({"scenario": name, "system": system, "waits": len(waits),
                     "P0 p50 ms": round(quantile(waits, 0.5) or 0.0, 1), "P0 p99 ms": round(p99 or 0.0, 1),
                     "p99 / calm p99": ratio})  # fmt: skip
    return rows


def median_row(system: str, rows: list[Row]) -> Row:
    """Medians of the numeric columns over rounds; text cells (">240", "4/4") by their leading number."""
    median: Row = {"system": system, "round": "median"}
    for key in rows[0]:
        if key in median:
            continue
        if any(row[key] == "-" for row in rows):  # not defined for this scenario (the calm run's ratio)
            median[key] = "-"
            continue
        numbers = [_number(row[key]) for row in rows]
        value = statistics.median(numbers)
        if key == "P0 done":
            median[key] = f"{value:g}/{str(rows[0][key]).split('/')[1]}"
        elif key == "settle s":
            median[key] = f"{'>' if _median_is_bound([row[key] for row in rows]) else ''}{value:.1f}"
        else:
            whole = all(isinstance(row[key], int) for row in rows) and float(value).is_integer()
            median[key] = int(value) if whole else round(value, 2)
    return median


def _median_is_bound(cells: list[float | int | str]) -> bool:
    """Whether the median falls on a timed-out run (">240"): then it is only a lower bound."""
    ordered = sorted(cells, key=_number)
    middle = ordered[(len(ordered) - 1) // 2 : len(ordered) // 2 + 1]
    return any(str(cell).startswith(">") for cell in middle)


def _number(cell: float | int | str) -> float:
    return float(str(cell).lstrip(">").split("/")[0])


def markdown_table(rows: list[Row]) -> str:
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(row[key]) for key in head) + " |" for row in rows]
    return "\n".join(lines)


def scenario_rows(trials: list[Trial]) -> list[Row]:
    """Rows in run order, then a median row per system."""
    rows = [summarise(trial) for trial in trials]
    systems = list(dict.fromkeys(trial.system for trial in trials))
    return rows + [median_row(s, [r for r in rows if r["system"] == s]) for s in systems]


def job_id_sources(trials: list[Trial]) -> dict[str, list[str]]:
    """Per system, where touch() found its job id: "rq" (rq.get_current_job() works) or "tag"."""
    sources: dict[str, set[str]] = {}
    for trial in trials:
        sources.setdefault(trial.system, set()).update(e.via for e in trial.executions())
    return {system: sorted(found) for system, found in sources.items()}


def write_results(trials: list[Trial], command: str, limit_bytes: int, timeout_s: float) -> str:
    """Write memstorm.md, .json and .png under bench/results; returns the markdown text."""
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    scenarios = list(dict.fromkeys(trial.scenario.name for trial in trials))
    by_name = {name: [t for t in trials if t.scenario.name == name] for name in scenarios}
    parts = [f"# Memory storm with plain RQ jobs, {stamp}", "", f"`{command}`", ""]
    payload: dict[str, object] = {"date": stamp, "command": command, "limit_bytes": limit_bytes}
    payload |= {"timeout_s": timeout_s, "job_id_sources": job_id_sources(trials), "scenarios": []}
    for name, group in by_name.items():
        scenario = group[0].scenario
        rows = scenario_rows(group)
        parts += [f"## {name}", "", describe(scenario, limit_bytes), "", markdown_table(rows), ""]
        payload["scenarios"].append(  # type: ignore[attr-defined]
            {"name": name, "jobs": [asdict(s) for s in scenario.jobs], "rows": rows}
            | {"serial_ideal_s": scenario.serial_ideal_s}
        )
    pooled = pooled_p0_rows(by_name)
    parts += ["## P0 waits, pooled over rounds", "", markdown_table(pooled), ""]
    payload["p0_pooled"] = pooled
    sources = "; ".join(f"{system}: {', '.join(via)}" for system, via in job_id_sources(trials).items())
    parts += [f"Where touch() got its job id (rq = rq.get_current_job(), tag = kwarg): {sources}.", ""]
    parts += [__doc__.split("\n\n", 1)[1].strip(), "", "![timelines](memstorm.png)", ""]
    text = "\n".join(parts)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "memstorm.md").write_text(text)
    (RESULTS / "memstorm.json").write_text(json.dumps(payload, indent=2) + "\n")
    plot(
        {name: group for name, group in by_name.items() if group[0].scenario.jobs},
        limit_bytes,
        RESULTS / "memstorm.png",
    )
    return text


def describe(scenario: Scenario, limit_bytes: int) -> str:
    shapes: dict[tuple[str, int, float], int] = {}
    for spec in scenario.jobs:
        shape = (spec.func, spec.mib, spec.seconds)
        shapes[shape] = shapes.get(shape, 0) + 1
    jobs = " + ".join(f"{n} x {func}({mib}, {s})" for (func, mib, s), n in shapes.items())
    return (
        f"cgroup v1 limit {limit_bytes / 10**6:.0f} MB; {jobs} on p2/p3, eight P0 markers, one a second; "
        f"serial ideal {scenario.serial_ideal_s:.1f} s."
    )


SYSTEM_STYLE = {"ours": ("#1c4e80", 106), "rq worker x2": ("#c2255c", 114)}  # colour, y of its marks


def plot(by_scenario: dict[str, list[Trial]], limit_bytes: int, path: Path) -> None:
    """One panel per scenario: usage over time of each system's last round, with its job starts,
    restarts and stops marked above the curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(by_scenario), 1, figsize=(13, 4.2 * len(by_scenario)), squeeze=False)
    for ax, (name, trials) in zip(axes[:, 0], by_scenario.items(), strict=True):
        last = {trial.system: trial for trial in trials}  # later rounds overwrite earlier ones
        for trial in last.values():
            draw_trial(ax, trial)
        ax.axhline(100, color="#555", lw=0.8, ls="--")
        limit = f"{limit_bytes / 10**6:.0f} MB"
        ax.set_title(f"{name}: cgroup usage (minus inactive file cache) / {limit} limit, last round")
        ax.set_xlabel("seconds since the first enqueue")
        ax.set_ylabel("usage %")
        ax.set_ylim(0, 122)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw_trial(ax: Axes, trial: Trial) -> None:
    colour, lane = SYSTEM_STYLE.get(trial.system, ("#555", 118))
    xs = [t - trial.t0 for t, _ in trial.samples]
    ax.plot(xs, [p for _, p in trial.samples], color=colour, lw=1.3, label=f"{trial.system} usage")
    plain = set(trial.plain_ids)
    runs = [e for e in trial.executions() if e.job_id in plain]
    seen: set[str] = set()
    firsts, restarts = [], []
    for run in runs:
        (restarts if run.job_id in seen else firsts).append(run.started - trial.t0)
        seen.add(run.job_id)
    stops = [e.last - trial.t0 for e in runs if not e.ended]
    for times, marker, what in ((firsts, "^", "start"), (restarts, "o", "restart"), (stops, "x", "stop")):
        if times:
            paint = {"facecolors": "none", "edgecolors": colour} if marker == "o" else {"c": colour}
            label = f"{trial.system} {what} ({len(times)})"
            ax.scatter(times, [lane] * len(times), marker=marker, s=28, label=label, **paint)
