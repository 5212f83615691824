"""Command line: `run` the daemon; `enqueue`, `job`, `status`, `pause`, `resume`, `shed`, `tasks` talk to
it through Redis.

Exit codes: 0 ok, 1 runtime failure (and: the job failed, no daemon is alive), 2 bad input or settings,
69 Redis cannot be reached, 124 `job --wait` timed out (see scheduler/exits.py).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adaptive_scheduler.errors import UsageError
from adaptive_scheduler.exits import EXIT_FAILURE, EXIT_OK, EXIT_TIMEOUT, EXIT_USAGE, reporting_failures
from adaptive_scheduler.settings import SettingsError, load_settings

if TYPE_CHECKING:
    import redis
    from adaptive_scheduler.settings import Settings

    Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]

DESCRIPTION = """\
Run RQ jobs on this host under a memory budget (`run`); enqueue jobs and look at
them, the queues and the daemons through Redis (the other commands).

Settings: ASCHED_* variables, then .env, then --config FILE (given before or
after the command, or ASCHED_CONFIG), then the defaults."""
EXIT_CODES = """exit codes:
  0    done (job: finished, or not ended yet)
  1    a runtime failure; job: failed, shed, skipped or canceled; status: no daemon is alive;
       pause/resume: a live daemon did not show the change within 3 s (the flag is set all the same)
  2    bad arguments or settings
  69   Redis cannot be reached
  70   run: a bug escaped the daemon loop
  124  job --wait: the job had not ended in time"""
PRIORITIES_HELP = "P0..P3 (also p2 or 2); several allowed"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `adaptive-scheduler` command."""
    _import_from_the_working_directory()
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        print(f"adaptive-scheduler: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.handler is not _run:  # the daemon sets up its own logging, after the exec (loguru: ~60 ms)
        from adaptive_scheduler import logs

        logs.setup(settings.log_level, settings.log_json)
    return reporting_failures(lambda: args.handler(settings, args))


def _import_from_the_working_directory() -> None:
    """Find the application's modules (`allowed_modules`) in the directory the command runs from, as
    `python -m adaptive_scheduler`, the daemon (which execs that) and Celery's command do. An installed
    console script starts without it on `sys.path`. Safe since our own packages have one scoped name."""
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.insert(0, cwd)


def package_version() -> str:
    """The installed distribution's version; in a source tree that was never installed, pyproject's."""
    from importlib import metadata

    try:
        return metadata.version("adaptive-scheduler")
    except metadata.PackageNotFoundError:
        import tomllib

        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        return str(tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"])


class _Version(argparse.Action):
    """`--version`, looked up only when asked: importlib.metadata costs every command about 20 ms."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.update(nargs=0, default=argparse.SUPPRESS)
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(f"adaptive-scheduler {package_version()}")
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adaptive-scheduler",
        description=DESCRIPTION,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, help="TOML settings file (also ASCHED_CONFIG)")
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    commands = _Commands(parser.add_subparsers(required=True, metavar="COMMAND", title="commands"))
    _add_run_and_enqueue(commands)
    _add_job_and_status(commands)
    _add_pause_and_resume(commands)
    _add_shed_and_tasks(commands)
    return parser


class _Commands:
    """Makes subcommands: each listed with one line in the top help, which is also its own --help
    description, and each taking --config after the command too."""

    def __init__(self, subparsers: Subcommands) -> None:
        self.subparsers = subparsers
        self.common = argparse.ArgumentParser(add_help=False)
        # SUPPRESS: not given after the command, the value given before it (or None) stays
        self.common.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="TOML settings file")

    def add(self, name: str, summary: str, within: Subcommands | None = None) -> argparse.ArgumentParser:
        subparsers = within or self.subparsers
        return subparsers.add_parser(name, help=summary, description=summary, parents=[self.common])


def _add_run_and_enqueue(commands: _Commands) -> None:
    run = commands.add("run", "serve jobs in the foreground until SIGTERM/SIGINT")
    run.add_argument("--demo", action="store_true", help="enqueue a small demo workload at start")
    run.add_argument("--until-idle", action="store_true", help="stop once every queue is empty")
    run.set_defaults(handler=_run)

    enqueue = commands.add("enqueue", "enqueue one job with plain RQ; prints its id")
    enqueue.add_argument("task", help="task name (e.g. add) or dotted path")
    enqueue.add_argument("args", nargs="?", default="[]", help="JSON list of arguments, e.g. '[1, 2]'")
    enqueue.add_argument(
        "--priority", help="P0 (critical) .. P3 (low); default: the task's own @task priority, else P2"
    )
    enqueue.add_argument("--kwargs", default="{}", help="JSON object of keyword arguments")
    enqueue.add_argument("--timeout", type=int, help="job timeout in seconds")
    enqueue.set_defaults(handler=_enqueue)


def _add_job_and_status(commands: _Commands) -> None:
    job = commands.add("job", "one job: where it is, or its result or error (--wait)")
    job.add_argument("id", help="job id (as `enqueue` printed it)")
    job.add_argument(
        "--wait",
        nargs="?",
        type=_seconds,
        const=math.inf,
        metavar="SECONDS",
        help="wait until the job has ended (at most SECONDS; exit 124 if it has not)",
    )
    job.add_argument("--json", action="store_true", help="print JSON instead of lines")
    job.set_defaults(handler=_job)

    status = commands.add("status", "queues, live daemons, slots, counts (exit 1: none alive)")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.set_defaults(handler=_status)


def _add_pause_and_resume(commands: _Commands) -> None:
    pause = commands.add("pause", "stop every daemon claiming jobs of priorities (queued jobs stay in Redis)")
    pause.add_argument("priorities", nargs="*", metavar="PRIORITY", help=PRIORITIES_HELP)
    pause.add_argument("--all", action="store_true", help="pause all four priorities")
    pause.add_argument(
        "--for", dest="for_s", type=_duration, metavar="DURATION", help="resume by itself after 90s, 10m, 2h"
    )
    pause.epilog = (
        "Every live daemon stops claiming from the paused queues within a tick; jobs already running "
        "finish, claimed jobs still waiting for a slot go back to the front of their queue. Waits until "
        "every live daemon shows the pause (exit 1 if one has not within 3 s). Pausing P0 warns."
    )
    pause.set_defaults(handler=_pause)
    resume = commands.add("resume", "let every daemon claim jobs of paused priorities again")
    resume.add_argument("priorities", nargs="*", metavar="PRIORITY", help=PRIORITIES_HELP)
    resume.add_argument("--all", action="store_true", help="resume every paused priority")
    resume.set_defaults(handler=_resume)


def _add_shed_and_tasks(commands: _Commands) -> None:
    shed = commands.add("shed", "jobs shed under memory pressure: list, replay")
    actions = shed.add_subparsers(required=True, metavar="ACTION", title="actions")
    shed_list = commands.add("list", "list shed jobs, oldest first", actions)
    shed_list.add_argument("--json", action="store_true", help="print JSON instead of lines")
    shed_list.set_defaults(handler=_shed_list)
    shed_replay = commands.add("replay", "put shed jobs back in their queues", actions)
    shed_replay.add_argument("ids", nargs="*", help="job ids (see `shed list`)")
    shed_replay.add_argument("--all", action="store_true", help="replay every shed job")
    shed_replay.set_defaults(handler=_shed_replay)

    profiles = commands.add("tasks", "what each task was learned to need in memory")
    profiles.add_argument("--json", action="store_true", help="print JSON (bytes) instead of a table")
    profiles.set_defaults(handler=_tasks)


def _seconds(text: str) -> float:
    """A `--wait` value: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (0 < value < math.inf):
        raise argparse.ArgumentTypeError(f"needs a positive number of seconds, got {text!r}")
    return value


def _duration(text: str) -> float:
    from adaptive_scheduler.pausing import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _run(settings: Settings, args: argparse.Namespace) -> int:
    from adaptive_scheduler.daemon_main import exec_daemon

    if args.demo:  # the demo's own tasks are allowlisted for this run only
        from adaptive_scheduler.tasks.registry import DEMO_MODULE

        modules = (*settings.allowed_modules, DEMO_MODULE)
        settings = settings.model_copy(update={"allowed_modules": modules})
    exec_daemon(settings, demo=args.demo, until_idle=args.until_idle)


def _enqueue(settings: Settings, args: argparse.Namespace) -> int:
    from adaptive_scheduler.producer import enqueue, resolve_redis_url

    url = resolve_redis_url(settings)
    print(enqueue(settings, url, args.task, args.args, args.kwargs, args.priority, args.timeout))
    return EXIT_OK


def _client(settings: Settings) -> redis.Redis:
    from adaptive_scheduler.producer import resolve_redis_url
    from adaptive_scheduler.redis_url import connect

    return connect(resolve_redis_url(settings), socket_timeout=10)


def _shed_list(settings: Settings, args: argparse.Namespace) -> int:
    from adaptive_scheduler.shed import list_shed

    entries = list_shed(_client(settings))
    if args.json:
        print(json.dumps(entries, indent=2))
    for entry in [] if args.json else entries:
        print(f"{entry['id']}  {entry['queue']}  {entry['level']}  {entry['reason']}")
    if not args.json and not entries:
        print("no shed jobs")
    return EXIT_OK


def _shed_replay(settings: Settings, args: argparse.Namespace) -> int:
    from adaptive_scheduler.shed import all_ids, replay

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
    from adaptive_scheduler.producer import resolve_redis_url
    from adaptive_scheduler.status_view import render, snapshot

    overview = snapshot(settings, resolve_redis_url(settings))
    print(json.dumps(overview, indent=2) if args.json else render(overview, time.time()))
    if overview["daemons"]:
        return EXIT_OK
    print("adaptive-scheduler: no daemon is alive", file=sys.stderr)  # scripts: `status || alert`
    return EXIT_FAILURE


def _pause(settings: Settings, args: argparse.Namespace) -> int:
    from adaptive_scheduler import pausing
    from adaptive_scheduler.model import Priority

    priorities = pausing.parse_priorities(args.priorities, args.all)
    if Priority.P0 in priorities:
        print(pausing.P0_WARNING, file=sys.stderr)
    client = _client(settings)
    try:
        applied = pausing.pause(client, priorities, args.for_s, print)
    finally:
        client.close()
    return EXIT_OK if applied else EXIT_FAILURE


def _resume(settings: Settings, args: argparse.Namespace) -> int:
    from adaptive_scheduler import pausing

    priorities = pausing.parse_priorities(args.priorities, args.all)
    client = _client(settings)
    try:
        applied = pausing.resume(client, priorities, print)
    finally:
        client.close()
    return EXIT_OK if applied else EXIT_FAILURE


def _job(settings: Settings, args: argparse.Namespace) -> int:
    from adaptive_scheduler import job_view

    client = _client(settings)
    try:
        ended = args.wait is None or job_view.wait_for_end(client, args.id, args.wait, settings.serializer)
        view = job_view.describe(job_view.read(client, args.id, settings.queues, settings.serializer))
    finally:
        client.close()
    print(json.dumps(view, indent=2, default=repr) if args.json else job_view.render(view))
    return job_view.exit_code(view) if ended else EXIT_TIMEOUT


def _tasks(settings: Settings, args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from adaptive_scheduler import task_profiles

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
