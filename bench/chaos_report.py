"""What a chaos run (bench.chaos) measured: gathered from Redis, the recorder and the logs, then
judged by pure functions against issue 15's goals, and rendered as markdown.

A confirmed enqueue ends in one of: finished, failed (RQ's failed registry: a slot killed under it
three times, its retries spent), parked (shed registry), still queued or claimed (not drained), lost
to async replication (its job hash is not on the final master at all: the enqueue never reached the
replica that was promoted, or reached only a demoted master), or lost by the daemon (the hash is
there, but the job is in none of those places).
"""

from __future__ import annotations

import itertools
import re
import statistics
from collections import Counter, defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis
from rq.job import Job
from rq.serializers import JSONSerializer

if TYPE_CHECKING:
    from bench.chaos import Chaos

QUEUE = "p2"
DEATHS = ("slot_kill", "daemon_kill", "daemon_stop")
MASTER_FAULTS = ("master_restart", "failover")
STALE = re.compile(r"dropped (\d+) stale outcomes")
LEASE_LOST = re.compile(r"lease lost: .*? dropped (\d+) held locally and (\d+) unwritten outcomes")


# --- gathering (I/O) ------------------------------------------------------------------------------


def gather(chaos: Chaos, exit_codes: dict[str, int | None]) -> dict[str, Any]:
    """Everything the judgement needs, as plain values."""
    produced = _produced(chaos.produced)
    executions = _executions(redis.Redis.from_url(chaos.recorder.url))
    master = chaos.cluster.master()
    ids = sorted(set(produced["ok"]) | {e["job"] for e in executions})
    return {
        "produced": produced,
        "executions": executions,
        "jobs": {job_id: _job_state(master, job_id) for job_id in ids},
        "faults": [asdict(f) for f in chaos.faults],
        "logs": _log_counts(sorted(chaos.workdir.glob("daemon*.log"))),
        "unexpected_exits": chaos.unexpected_exits,
        "final_exit_codes": exit_codes,
        "killed_on_purpose": sum(len(seat.killed) for seat in chaos.seats),
    }


def _produced(path: Path) -> dict[str, Any]:
    ok, errors = {}, Counter()
    for line in path.read_text().splitlines():
        kind, job_id, at, rest = line.split(" ", 3)
        if kind == "ok":
            ok[job_id] = float(at)
        else:
            errors[rest] += 1
    return {"ok": ok, "errors": dict(errors)}


def _executions(recorder: redis.Redis) -> list[dict[str, Any]]:
    found = []
    for execution in recorder.lrange("executions", 0, -1):
        raw = {k.decode(): v.decode() for k, v in recorder.hgetall(b"exec:" + execution).items()}
        found.append(
            {
                "id": execution.decode(),
                "job": raw["job"],
                "pid": int(raw["pid"]),
                "daemon": int(raw["daemon"]),
                "start": float(raw["start"]),
                "end": float(raw["end"]) if "end" in raw else None,
                "last": float(raw["last"]),
            }
        )
    recorder.close()
    return found


def _job_state(master: redis.Redis, job_id: str) -> dict[str, Any]:
    """Where the job is on the final master, and what its result names."""
    pipe = master.pipeline(transaction=False)
    pipe.hget(f"rq:job:{job_id}", "status")
    pipe.zscore(f"rq:finished:{QUEUE}", job_id)
    pipe.zscore(f"rq:failed:{QUEUE}", job_id)
    pipe.lpos(f"rq:queue:{QUEUE}", job_id)
    pipe.zscore(f"rq:scheduled:{QUEUE}", job_id)
    pipe.zscore("asched:shed", job_id)
    pipe.xlen(f"rq:results:{job_id}")
    status, finished, failed, queued, scheduled, shed, results = pipe.execute()
    claimed = any(True for _ in master.zscan_iter(f"rq:wip:{QUEUE}", match=f"{job_id}:*"))
    places = {"finished": finished, "failed": failed, "queued": queued, "scheduled": scheduled}
    places |= {"shed": shed, "claimed": claimed or None}
    return {
        "status": status.decode() if status else None,
        "places": sorted(k for k, v in places.items() if v is not None),
        "results": results,
        "result": _result_execution(master, job_id) if finished is not None else None,
    }


def _result_execution(master: redis.Redis, job_id: str) -> str | None:
    try:
        result = Job.fetch(job_id, connection=master, serializer=JSONSerializer).latest_result()
    except Exception:  # a job RQ cannot read is reported, not fatal to the report
        return "<unreadable>"
    return str(result.return_value) if result is not None else None


def _log_counts(paths: list[Path]) -> dict[str, int]:
    counts = Counter()
    for path in paths:
        text = path.read_text(errors="replace")
        counts["stale_dropped"] += sum(int(n) for n in STALE.findall(text))
        for held, unwritten in LEASE_LOST.findall(text):
            counts["lease_lost"] += 1
            counts["local_dropped_at_lease_loss"] += int(held)
            counts["stale_dropped"] += int(unwritten)
        counts["critical"] += text.count("| CRITICAL")
        counts["breaker_opened"] += text.count("breaker open")
    return dict(counts)


# --- judgement (pure) -----------------------------------------------------------------------------


def analyse(facts: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    confirmed = facts["produced"]["ok"]
    by_job = _runs_by_job(facts["executions"])
    faults = facts["faults"]
    fates = {job_id: fate(facts["jobs"][job_id]) for job_id in confirmed}
    counted = Counter(fates.values())
    return {
        "config": config,
        "enqueue": {
            "confirmed": len(confirmed),
            "failed_attempts": sum(facts["produced"]["errors"].values()),
            "errors": facts["produced"]["errors"],
        },
        "fates": dict(counted),
        "lost_async": _async_losses(fates, confirmed, faults, by_job),
        "lost_daemon": {j: facts["jobs"][j] for j, f in fates.items() if f == "lost_daemon"},
        "executions": _execution_counts(confirmed, by_job),
        "second_runs": second_runs(by_job, faults),
        "overlaps": overlaps(by_job),
        "stale_writes": stale_writes(facts["jobs"], by_job, faults),
        "logs": facts["logs"],
        "daemons": {
            "unexpected_exits": facts["unexpected_exits"],
            "killed_on_purpose": facts["killed_on_purpose"],
            "final_exit_codes": facts["final_exit_codes"],
        },
        "faults": Counter(f["kind"] for f in faults),
        "fault_log": faults,
        "service": service_times(faults, confirmed, by_job, config["down_after_ms"] / 1000 + 2.0),
    }


def fate(state: dict[str, Any]) -> str:
    """Where a confirmed job ended (see the module docstring)."""
    places = state["places"]
    if state["status"] is None:
        return "lost_async"
    if state["status"] == "finished" and places == ["finished"]:
        return "finished"
    if state["status"] == "failed" and places == ["failed"]:
        return "failed"
    if "shed" in places:
        return "parked"
    if places and set(places) <= {"queued", "scheduled", "claimed"}:
        return "not_drained"
    return "lost_daemon"


def _runs_by_job(executions: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    by_job: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for execution in sorted(executions, key=lambda e: e["start"]):
        by_job[execution["job"]].append(execution)
    return dict(by_job)


def _async_losses(
    fates: dict[str, str], confirmed: dict[str, float], faults: list[dict[str, Any]], by_job: dict[str, list]
) -> dict[str, Any]:
    """Jobs lost with a master, by when they were confirmed: before its kill (acknowledged, not yet
    replicated), or after it (by the killed master restarted from its AOF while the sentinels were
    promoting the replica: it served as master until they made it a replica, dropping those writes)."""
    kills = sorted(f["at"] for f in faults if f["kind"] in MASTER_FAULTS)
    lost = [j for j, f in fates.items() if f == "lost_async"]
    offsets = [_from_nearest(confirmed[j], kills) for j in lost]
    before = [o for o in offsets if o is not None and o <= 0]
    after = [o for o in offsets if o is not None and o > 0]
    return {
        "count": len(lost),
        "ran_anyway": sum(1 for j in lost if by_job.get(j)),
        "confirmed_before_a_kill": len(before),
        "confirmed_after_a_kill": len(after),
        "seconds_from_the_kill": _spread([round(o, 3) for o in before + after]),
        "not_near_a_master_kill": sum(1 for o in offsets if o is None),
    }


def _from_nearest(at: float, kills: list[float], within_s: float = 30.0) -> float | None:
    """Seconds from the nearest master kill to `at` (negative: before it); None if none is near."""
    nearest = min(kills, key=lambda k: abs(at - k), default=None)
    return at - nearest if nearest is not None and abs(at - nearest) <= within_s else None


def _execution_counts(confirmed: dict[str, float], by_job: dict[str, list]) -> dict[str, Any]:
    counts = Counter(len(by_job.get(job_id, [])) for job_id in confirmed)
    unconfirmed = [j for j in by_job if j not in confirmed]
    return {
        "histogram": {str(k): v for k, v in sorted(counts.items())},
        "more_than_once": sum(v for k, v in counts.items() if k > 1),
        "total": sum(len(by_job.get(j, [])) for j in confirmed),
        "jobs_of_failed_enqueues_that_ran": len(unconfirmed),
    }


def second_runs(by_job: dict[str, list[dict[str, Any]]], faults: list[dict[str, Any]]) -> dict[str, Any]:
    """Every execution after a job's first, by what preceded it: a real death of the slot or daemon
    that ran the previous execution, else a master kill in between (a write lost with it), else none."""
    causes: Counter[str] = Counter()
    unexplained = []
    for job_id, runs in by_job.items():
        for previous, following in itertools.pairwise(runs):
            cause = _cause(previous, following, faults)
            causes[cause] += 1
            if cause == "unexplained":
                unexplained.append({"job": job_id, "previous": previous, "following": following})
    return {"by_cause": dict(causes), "unexplained": unexplained}


def _cause(previous: dict[str, Any], following: dict[str, Any], faults: list[dict[str, Any]]) -> str:
    between = [f for f in faults if f["at"] <= following["start"] and f["ended"] >= previous["start"]]
    for f in between:
        if f["kind"] == "slot_kill" and f["pid"] == previous["pid"]:
            return "slot_kill"
        if f["kind"] in ("daemon_kill", "daemon_stop") and f["pid"] == previous["daemon"]:
            return f["kind"]
    if any(f["kind"] in MASTER_FAULTS for f in between):
        return "after_master_kill"
    return "unexplained"


def overlaps(by_job: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Pairs of executions of one job whose [start, end] intervals intersect (a killed execution ends
    at its last beat)."""
    found = []
    for job_id, runs in by_job.items():
        for i, a in enumerate(runs):
            for b in runs[i + 1 :]:
                shared = min(_end(a), _end(b)) - max(a["start"], b["start"])
                if shared > 0:
                    found.append({"job": job_id, "a": a, "b": b, "overlap_s": round(shared, 3)})
    return found


def _end(execution: dict[str, Any]) -> float:
    return float(execution["end"] if execution["end"] is not None else execution["last"])


def stale_writes(
    jobs: dict[str, dict[str, Any]], by_job: dict[str, list], faults: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Traces of an outcome written by an execution that no longer held its claim: more than one
    result, a job in two places at once, or a result from an execution that was not the job's last.
    The last is not a trace when a master kill came between the two runs: the later one then ran on
    a master the sentinels demoted (its writes dropped with it), which `split_brain` marks."""
    found = []
    for job_id, state in jobs.items():
        runs = by_job.get(job_id, [])
        problems = []
        if state["results"] > 1:
            problems.append(f"{state['results']} results")
        if len(state["places"]) > 1:
            problems.append(f"in {', '.join(state['places'])}")
        if state["result"] is not None and runs and state["result"] != runs[-1]["id"]:
            problems.append("result from an earlier execution than the last")
        if problems:
            split = len(problems) == 1 and problems[0].startswith("result from") and len(runs) > 1
            split = split and _cause(runs[-2], runs[-1], faults) == "after_master_kill"
            found.append({"job": job_id, "problems": problems, "split_brain": split, "runs": runs})
    return found


def service_times(
    faults: list[dict[str, Any]], confirmed: dict[str, float], by_job: dict[str, list], goal_s: float
) -> dict[str, Any]:
    """Per master kill: seconds until the sentinels named a master, until the first claim on it, and
    until the first job enqueued after the kill (so on the master serving then) started."""
    rows = {}
    for kind in MASTER_FAULTS:
        mine = [f for f in faults if f["kind"] == kind]
        for f in mine:
            f["detail"]["new_job_started_s"] = _first_new_start(f["at"], confirmed, by_job)
        named = [d.get("sentinels_named_s", d.get("named_s")) for d in (f["detail"] for f in mine)]
        mine = [f["detail"] for f in mine]
        rows[kind] = {
            "count": len(mine),
            "named_s": _spread([n for n in named if n is not None]),
            "served_s": _spread([d["served_s"] for d in mine if "served_s" in d]),
            "new_job_started_s": _spread([d["new_job_started_s"] for d in mine if d["new_job_started_s"]]),
            "not_served": sum(1 for d in mine if "served_s" not in d),
            "within_goal": sum(1 for d in mine if (d["new_job_started_s"] or goal_s + 1) <= goal_s),
        }
    return {"goal_s": goal_s, **rows}


def _first_new_start(kill: float, confirmed: dict[str, float], by_job: dict[str, list]) -> float | None:
    starts = [by_job[j][0]["start"] for j, at in confirmed.items() if 0 < at - kill < 60 and j in by_job]
    return round(min(starts) - kill, 3) if starts else None


def _spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"min": min(values), "median": round(statistics.median(values), 3), "max": max(values)}


# --- rendering ------------------------------------------------------------------------------------


def render(report: dict[str, Any]) -> str:
    config, fates = report["config"], report["fates"]
    execs, seconds, logs = report["executions"], report["second_runs"], report["logs"]
    exits, lost = report["daemons"], report["lost_async"]
    lines = [
        "# Chaos run (issue 15)",
        "",
        f"`python -m bench.chaos --minutes {config['minutes']:g} --seed {config['seed']} --rate "
        f"{config['rate']:g}`, began {config['began_utc']}; lease {config['lease_ttl_s']:g} s, "
        f"down-after-milliseconds {config['down_after_ms']}, 3 daemons x 2 slots, jobs 50-500 ms.",
        "",
        "Faults: " + ", ".join(f"{k} {v}" for k, v in sorted(report["faults"].items())),
        "",
        "| measure | value | goal |",
        "|---|---|---|",
        f"| enqueues confirmed by Redis (failed attempts, retried) | {report['enqueue']['confirmed']} "
        f"({report['enqueue']['failed_attempts']}) | |",
        f"| finished / failed (retries spent) / parked | {fates.get('finished', 0)} / "
        f"{fates.get('failed', 0)} / {fates.get('parked', 0)} | |",
        f"| not drained at the end (still queued or claimed) | {fates.get('not_drained', 0)} | 0 |",
        f"| **lost by the daemon** | **{fates.get('lost_daemon', 0)}** | 0 |",
        f"| lost with a master (hash absent on the final master): confirmed before its kill / after it, "
        f"by the restarted old master before Sentinel demoted it | {lost['confirmed_before_a_kill']} / "
        f"{lost['confirmed_after_a_kill']} | (async replication) |",
        f"| jobs run more than once (executions: {execs['histogram']}) | {execs['more_than_once']} | |",
        f"| second runs after a real death (slot kill / daemon kill / daemon stop) | "
        f"{_causes(seconds, DEATHS)} | |",
        f"| second runs after a master kill, no death (a write lost with it) | "
        f"{seconds['by_cause'].get('after_master_kill', 0)} | |",
        f"| **second runs with no death nor master kill before them** | "
        f"**{seconds['by_cause'].get('unexplained', 0)}** | 0 |",
        f"| **overlapping runs of one job** | **{len(report['overlaps'])}** | 0 |",
        f"| **stale writes** (2 results, 2 places, result of a superseded execution) | "
        f"**{sum(1 for w in report['stale_writes'] if not w['split_brain'])}** | 0 |",
        f"| result of a superseded run, the later run on a master Sentinel then demoted | "
        f"{sum(1 for w in report['stale_writes'] if w['split_brain'])} | |",
        f"| stale outcomes dropped by fencing (daemon logs) / leases lost | {logs.get('stale_dropped', 0)} / "
        f"{logs.get('lease_lost', 0)} | |",
        f"| **daemon exits not caused by the run** | **{len(exits['unexpected_exits'])}** | 0 |",
        f"| daemons SIGKILLed by the run / exit codes at the final SIGTERM | {exits['killed_on_purpose']} / "
        f"{sorted(set(exits['final_exit_codes'].values()), key=str)} | |",
    ]
    lines += _service_rows(report["service"])
    return "\n".join(lines) + "\n"


def _causes(seconds: dict[str, Any], kinds: tuple[str, ...]) -> str:
    return " / ".join(str(seconds["by_cause"].get(k, 0)) for k in kinds)


def _service_rows(service: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"Master kill to service (goal: Sentinel detection {service['goal_s'] - 2:g} s + 2 s = "
        f"{service['goal_s']:g} s); seconds, min / median / max:",
        "",
        "| fault | count | sentinels name a master | first job enqueued after the kill starts | first "
        "claim seen by a 20 ms poll (lags) | within goal |",
        "|---|---|---|---|---|---|",
    ]
    for kind in MASTER_FAULTS:
        row = service[kind]
        lines.append(
            f"| {kind} | {row['count']} | {_fmt(row['named_s'])} | {_fmt(row['new_job_started_s'])} | "
            f"{_fmt(row['served_s'])} | {row['within_goal']} of {row['count']} |"
        )
    return lines


def _fmt(spread: dict[str, float] | None) -> str:
    if spread is None:
        return "-"
    return f"{spread['min']:.2f} / {spread['median']:.2f} / {spread['max']:.2f}"
