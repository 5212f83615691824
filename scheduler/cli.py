"""Command line: `run`, `enqueue`, `shed`, `status`, `tasks`.

Exit codes: 0 ok, 1 runtime failure, 2 bad input or settings, 69 Redis cannot be reached
(see scheduler/exits.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from scheduler.errors import UsageError
from scheduler.exits import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, reporting_failures
from settings import SettingsError, load_settings

if TYPE_CHECKING:
    import redis

    from settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `adaptive-scheduler` command."""
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        print(f"adaptive-scheduler: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.handler is not _run:  # the daemon sets up its own logging, after the exec (loguru: ~60 ms)
        from scheduler import logs

        logs.setup(settings.log_level, settings.log_json)
    return reporting_failures(lambda: args.handler(settings, args))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adaptive-scheduler", description=__doc__)
    parser.add_argument("--config", type=Path, help="TOML settings file (also ASCHED_CONFIG)")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="serve jobs in the foreground until SIGTERM/SIGINT")
    run.add_argument("--demo", action="store_true", help="enqueue a small demo workload at start")
    run.add_argument("--until-idle", action="store_true", help="stop once every queue is empty")
    run.set_defaults(handler=_run)

    enqueue = commands.add_parser("enqueue", help="enqueue one job with plain RQ")
    enqueue.add_argument("task", help="task name (e.g. add) or dotted path")
    enqueue.add_argument("args", nargs="?", default="[]", help="JSON list of arguments, e.g. '[1, 2]'")
    enqueue.add_argument(
        "--priority", help="P0 (critical) .. P3 (low); default: the task's own @task priority, else P2"
    )
    enqueue.add_argument("--kwargs", default="{}", help="JSON object of keyword arguments")
    enqueue.add_argument("--timeout", type=int, help="job timeout in seconds")
    enqueue.set_defaults(handler=_enqueue)

    shed = commands.add_parser("shed", help="jobs shed under memory pressure: list, replay")
    shed_commands = shed.add_subparsers(required=True, metavar="ACTION")
    shed_list = shed_commands.add_parser("list", help="list shed jobs, oldest first")
    shed_list.add_argument("--json", action="store_true", help="print JSON instead of lines")
    shed_list.set_defaults(handler=_shed_list)
    shed_replay = shed_commands.add_parser("replay", help="put shed jobs back in their queues")
    shed_replay.add_argument("ids", nargs="*", help="job ids (see `shed list`)")
    shed_replay.add_argument("--all", action="store_true", help="replay every shed job")
    shed_replay.set_defaults(handler=_shed_replay)

    status = commands.add_parser("status", help="queue depths, slots and counts")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.set_defaults(handler=_status)

    profiles = commands.add_parser("tasks", help="what each task was learned to need in memory")
    profiles.add_argument("--json", action="store_true", help="print JSON (bytes) instead of a table")
    profiles.set_defaults(handler=_tasks)
    return parser


def _run(settings: Settings, args: argparse.Namespace) -> int:
    from scheduler.daemon_main import exec_daemon

    if args.demo:  # the demo's own tasks are allowlisted for this run only
        from tasks.registry import DEMO_MODULE

        modules = (*settings.allowed_modules, DEMO_MODULE)
        settings = settings.model_copy(update={"allowed_modules": modules})
    exec_daemon(settings, demo=args.demo, until_idle=args.until_idle)


def _enqueue(settings: Settings, args: argparse.Namespace) -> int:
    from scheduler.producer import enqueue, resolve_redis_url

    url = resolve_redis_url(settings)
    print(enqueue(settings, url, args.task, args.args, args.kwargs, args.priority, args.timeout))
    return EXIT_OK


def _client(settings: Settings) -> redis.Redis:
    from scheduler.producer import resolve_redis_url
    from scheduler.redis_url import connect

    return connect(resolve_redis_url(settings), socket_timeout=10)


def _shed_list(settings: Settings, args: argparse.Namespace) -> int:
    from scheduler.shed import list_shed

    entries = list_shed(_client(settings))
    if args.json:
        print(json.dumps(entries, indent=2))
    for entry in [] if args.json else entries:
        print(f"{entry['id']}  {entry['queue']}  {entry['level']}  {entry['reason']}")
    if not args.json and not entries:
        print("no shed jobs")
    return EXIT_OK


def _shed_replay(settings: Settings, args: argparse.Namespace) -> int:
    from scheduler.shed import all_ids, replay

    client = _client(settings)
    if bool(args.ids) == bool(args.all):
        raise UsageError("give job ids or --all (not both)")
    wanted = all_ids(client) if args.all else args.ids
    replayed = replay(client, wanted)
    print(f"replayed {len(replayed)} of {len(wanted)} jobs")
    missing = sorted(set(wanted) - set(replayed))
    if missing:
        print(f"not in the shed registry: {', '.join(missing)}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _status(settings: Settings, args: argparse.Namespace) -> int:
    from scheduler.producer import resolve_redis_url
    from scheduler.status_view import render, snapshot

    overview = snapshot(settings, resolve_redis_url(settings))
    print(json.dumps(overview, indent=2) if args.json else render(overview, time.time()))
    return EXIT_OK


def _tasks(settings: Settings, args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from scheduler import task_profiles

    now = time.time()
    client = _client(settings)
    try:
        rows = task_profiles.gather(client, task_profiles.rule_of(settings), now)
    finally:
        client.close()
    if args.json:
        print(json.dumps([asdict(row) for row in rows], indent=2))
    else:
        print(task_profiles.render(rows, now))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
