"""The settings model: every knob of the daemon, its default, its bounds and what it means.

The README's configuration table is generated from this model (`adaptive_scheduler.settings.table`),
so a field's description is user-facing documentation: say what it does and why one would change it.
"""

from __future__ import annotations

import re
from datetime import UTC
from pathlib import Path
from typing import Any, Literal

from adaptive_scheduler.settings.snapshot import RedisUrlText
from pydantic import (
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "ASCHED_"
REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+sentinel://", "rediss+sentinel://")
# The daemon alone holds about 48 MiB (README, "Measured"): a smaller budget is a typo (2MB for 2GB).
MEMORY_BUDGET_FLOOR = ByteSize(64 * 1024**2)
DEFAULT_SLOT_MEMORY_CAP = ByteSize(400 * 1000 * 1000)
_BYTE_SIZE = TypeAdapter(ByteSize)


class PeriodicJob(BaseModel):
    """One periodic job: a task enqueued on an interval or a cron schedule."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="Unique name (dedup key, job ids).")
    task: str = Field(min_length=1, description="Registered task name or allowlisted module.function.")
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = Field(default_factory=dict)
    priority: Literal["P0", "P1", "P2", "P3"] | None = Field(
        default=None, description="Unset: the task's own @task priority, else P3."
    )
    every_s: float | None = Field(default=None, ge=1, description="Interval, aligned to the Unix epoch.")
    cron: str | None = Field(default=None, description="Crontab expression (UTC), e.g. '*/5 * * * *'.")
    heartbeat: bool | None = Field(
        default=None, description="Skipped under memory pressure; unset: the task's own @task flag."
    )

    @model_validator(mode="after")
    def _one_schedule(self) -> PeriodicJob:
        if (self.every_s is None) == (self.cron is None):
            raise ValueError(f"periodic job {self.name!r}: give exactly one of every_s and cron")
        if self.cron is not None:
            from apscheduler.triggers.cron import CronTrigger  # here: the daemon imports it only if used

            try:
                CronTrigger.from_crontab(self.cron, timezone=UTC)
            except ValueError as exc:
                raise ValueError(f"periodic job {self.name!r}: cron {self.cron!r}: {exc}") from None
        return self


class Settings(RedisUrlText, BaseSettings):
    """All settings of one daemon. Immutable once loaded."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="forbid",
        frozen=True,
        validate_default=True,
        allow_inf_nan=False,  # every float is a duration or a percentage: inf and nan are typos
    )

    redis_url: SecretStr | None = Field(
        default=None,
        description="Redis to serve (redis://, rediss:// or unix://). Unset: start a private embedded "
        "redis-server whose data lives in state_dir.",
    )
    state_dir: Path = Field(
        default=Path(".state"), description="Where the embedded Redis keeps its data and socket."
    )
    queues: tuple[str, str, str, str] = Field(
        default=("p0", "p1", "p2", "p3"),
        description="RQ queue names for priorities P0 (critical) to P3 (low), highest first.",
    )
    slots: int = Field(default=2, ge=1, le=64, description="Execution slots (slot processes).")
    p0_lane: bool = Field(
        default=True,
        description="While every slot is busy (or memory pressure is ELEVATED or above), keep one more "
        "slot open for P0 jobs only, so P0 never waits for a long job or for a slot to start.",
    )
    p0_lane_idle_s: float = Field(
        default=30.0,
        gt=0,
        description="The P0 lane closes after this long without a P0 job, once a slot is free.",
    )
    slot_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="Slots (the P0 lane excepted) run this many nice steps below the daemon, so that "
        "jobs busy on every core do not delay the daemon's reactions and P0 starts. Each slot leads its "
        "own session, with the same weight where the kernel shares CPU time between sessions first "
        "(autogroup). 0: same as the daemon.",
    )
    slot_mode: Literal["pool", "fresh"] = Field(
        default="pool",
        description="pool: long-lived slot processes; fresh: a new process per job (full isolation).",
    )
    local_queue_depth: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="Jobs claimed from Redis and held locally, waiting for a slot, when jobs take 10 ms or "
        "more (two slots) or memory is pressed; shorter jobs: more, up to local_queue_max_depth.",
    )
    local_queue_max_depth: int = Field(
        default=32,
        ge=1,
        le=1000,
        description="The most jobs held locally for very short jobs: the daemon holds about 20 ms of "
        "work per slot (by the jobs' mean run time), so each Redis call carries more jobs.",
    )
    serializer: Literal["json", "pickle"] = Field(
        default="json",
        description="Payload format producers use (rq.serializers.JSONSerializer). pickle runs code "
        "on load: only for trusted producers.",
    )
    allowed_modules: tuple[str, ...] = Field(
        default=(),
        description='Modules whose functions producers may run (e.g. ["myapp.jobs"]). Nothing else runs: '
        "empty by default. Standard-library modules (os, subprocess, builtins, ...) are refused.",
    )
    default_job_timeout_s: float = Field(
        default=180.0, gt=0, description="Timeout of a job that sets none (RQ's default is 180 s)."
    )
    default_result_ttl_s: int = Field(
        default=500, ge=-1, description="How long results of finished jobs stay (RQ's default; -1: forever)."
    )
    default_failure_ttl_s: int = Field(
        default=365 * 24 * 3600, ge=-1, description="How long failed jobs stay in the failed registry."
    )
    lease_ttl_s: float = Field(
        default=10.0,
        ge=1,
        description="Liveness lease of a daemon: its claimed jobs are recovered this long after it dies.",
    )
    replica_acks: int = Field(
        default=0,
        ge=0,
        le=16,
        description="Replicas that must acknowledge each claim-and-settle call (Redis WAIT) before the "
        "daemon goes on; 0: none (asynchronous replication, the default). Costs a replica round trip "
        "per call; see 'What async replication can still lose'.",
    )
    park_claims: bool = Field(
        default=True,
        description="While calm, park a one-job claim behind each watch of an empty queue, so that Redis "
        "claims a job the moment it lands (off: the daemon claims it once the watch has woken it, one "
        "round trip later; about 0.2 ms of enqueue->start). Not with replica_acks (a parked claim waits "
        "for no replica).",
    )
    replica_ack_timeout_ms: int = Field(
        default=500,
        ge=1,
        le=60_000,
        description="How long a call waits for those acknowledgements; past it the daemon goes on, "
        "logs it and counts the call as unreplicated.",
    )
    stop_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="On stop, how long running jobs may take to finish before they are put back.",
    )
    memory_budget: ByteSize | None = Field(
        default=None,
        description="Memory budget, e.g. 2GiB; at least 64MiB. Unset: the daemon's cgroup limit (systemd "
        "MemoryMax=), else the host's RAM.",
    )
    slot_memory_cap: ByteSize = Field(
        default=DEFAULT_SLOT_MEMORY_CAP,
        description="A slot whose job grew past this is preempted (or stopped if it cannot be). At most "
        "memory_budget when that is set; left unset, it is lowered to a smaller memory_budget.",
    )
    slot_idle_growth_limit: ByteSize = Field(
        default=ByteSize(100 * 1000 * 1000),
        description="An idle slot whose RSS grew past this since it started is replaced (leak guard).",
    )
    admission_headroom_percent: float = Field(
        default=5.0,
        ge=0,
        lt=50,
        description="A job starts only if the memory in use, what running jobs are still predicted to add "
        "and its own predicted peak stay under high_percent minus this.",
    )
    unprofiled_task_percent: float = Field(
        default=25.0,
        gt=0,
        le=100,
        description="% of the budget a task is assumed to need before its first run has measured it; "
        "until then its jobs run one at a time.",
    )
    admission_max_wait_s: float = Field(
        default=60.0,
        gt=0,
        description="A job that waited this long for memory is started before any job behind it "
        "(smaller jobs stop overtaking it).",
    )
    memory_stop_limit: int = Field(
        default=3,
        ge=1,
        description="A job stopped for memory this many times (pressure or slot cap) is parked in the "
        "shed registry with its peak, instead of running again.",
    )
    at_most_once: tuple[str, ...] = Field(
        default=(),
        description="Tasks (function paths) or modules whose jobs must never run twice: stopped for "
        "memory, they fail with the reason instead of running again (also @task(at_most_once=True)).",
    )
    profile_margin_percent: float = Field(
        default=15.0, ge=0, le=200, description="Safety margin added to a task's learned peak (p90)."
    )
    profile_half_life_s: float = Field(
        default=24 * 3600.0, gt=0, description="Age at which a learned peak counts half as much."
    )
    profile_max_tasks: int = Field(
        default=1000, ge=1, description="Memory profiles kept in Redis; the least recently updated go."
    )
    elevated_percent: float = Field(
        default=70.0, description="Pressure % at which heartbeat jobs are skipped."
    )
    high_percent: float = Field(
        default=85.0,
        description="Pressure % at which P2/P3 jobs are no longer started and, while two or more jobs "
        "run, one P2/P3 job stops per reading.",
    )
    emergency_percent: float = Field(
        default=95.0, description="Pressure % at which only P0 runs: one other job stops per reading."
    )
    pressure_margin_percent: float = Field(
        default=5.0, ge=0, lt=50, description="A level is left only below its threshold minus this ..."
    )
    pressure_hold_s: float = Field(default=2.0, ge=0, description="... for this long (hysteresis).")
    sample_interval_s: float = Field(default=0.1, gt=0, le=10, description="How often memory is read.")
    preempt_grace_s: float = Field(
        default=2.0, gt=0, description="How long a preempted job has to checkpoint before it is killed."
    )
    breaker_failures: int = Field(
        default=3, ge=1, description="Failures of one task within breaker_window_s that open its breaker."
    )
    breaker_window_s: float = Field(default=60.0, gt=0, description="The window those failures count in.")
    breaker_cooldown_s: float = Field(
        default=30.0,
        gt=0,
        description="How long an open breaker defers its task's jobs before one trial job runs.",
    )
    periodic: tuple[PeriodicJob, ...] = Field(
        default=(),
        description="Periodic jobs ([[periodic]] tables in the config file; JSON in the environment): "
        "name, task, args, kwargs, priority, every_s or cron, heartbeat. Each tick is enqueued once "
        "across all daemons; ticks missed while no daemon ran are not made up.",
    )
    statsd_url: str | None = Field(
        default=None,
        description="StatsD server to send metrics to, as udp://host:port. Unset: no metrics.",
    )
    statsd_prefix: str = Field(
        default="asched.{host}",
        description="First part of every metric name; {host} becomes this host's short name. Give "
        "two daemons on one host different prefixes, or their gauges overwrite each other.",
    )
    log_level: Literal["TRACE", "DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Lowest level logged."
    )
    log_json: bool = Field(default=False, description="Log one JSON object per line (journald friendly).")

    @field_validator("redis_url")
    @classmethod
    def _known_scheme(cls, url: SecretStr | None) -> SecretStr | None:
        if url is not None and not url.get_secret_value().startswith(REDIS_SCHEMES):
            raise ValueError(f"must start with one of {', '.join(REDIS_SCHEMES)}")
        if url is not None and "+sentinel://" in url.get_secret_value():
            from adaptive_scheduler.redis_url import parse_sentinel

            parse_sentinel(url.get_secret_value())  # a ValueError says what is wrong with it
        return url

    @field_validator("memory_budget")
    @classmethod
    def _budget_above_floor(cls, budget: ByteSize | None) -> ByteSize | None:
        if budget is not None and budget < MEMORY_BUDGET_FLOOR:
            floor = MEMORY_BUDGET_FLOOR.human_readable()
            raise ValueError(f"must be at least {floor} (got {_size(budget)})")
        return budget

    @field_validator("statsd_url")
    @classmethod
    def _udp_host_port(cls, url: str | None) -> str | None:
        if url is not None:
            host, _, port = url.removeprefix("udp://").rpartition(":")
            if not url.startswith("udp://") or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError("must look like udp://host:port")
        return url

    @field_validator("statsd_prefix")
    @classmethod
    def _graphite_path(cls, prefix: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_{}-]+(\.[A-Za-z0-9_{}-]+)*", prefix):
            raise ValueError("must be dot-separated names of letters, digits, '_' or '-' (and {host})")
        return prefix

    @field_validator("periodic")
    @classmethod
    def _unique_periodic_names(cls, jobs: tuple[PeriodicJob, ...]) -> tuple[PeriodicJob, ...]:
        names = [job.name for job in jobs]
        if len(set(names)) != len(names):
            raise ValueError(f"periodic job names must be unique: {names}")
        return jobs

    @field_validator("allowed_modules")
    @classmethod
    def _only_job_modules(cls, modules: tuple[str, ...]) -> tuple[str, ...]:
        from adaptive_scheduler.tasks.registry import refused_module_reason

        for module in modules:
            if (reason := refused_module_reason(module)) is not None:
                raise ValueError(reason)
        return modules

    @field_validator("queues", mode="before")
    @classmethod
    def _four_queue_names(cls, names: Any) -> Any:
        """Say what `queues` needs before the tuple type does ("queues.3: Field required" says little)."""
        if isinstance(names, list | tuple) and len(names) != 4:
            raise ValueError(f"queues needs exactly 4 names, P0..P3 (got {len(names)})")
        return names

    @field_validator("queues")
    @classmethod
    def _distinct_queue_names(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(names)) != len(names) or not all(names):
            raise ValueError("must be four distinct, non-empty names")
        return names

    @model_validator(mode="before")
    @classmethod
    def _default_cap_within_budget(cls, data: Any) -> Any:
        """An unset slot_memory_cap larger than memory_budget becomes the budget (checked after)."""
        if not isinstance(data, dict) or data.get("memory_budget") is None or "slot_memory_cap" in data:
            return data
        try:
            budget = _BYTE_SIZE.validate_python(data["memory_budget"])
        except ValidationError:
            return data  # the field's own validation reports it
        return {**data, "slot_memory_cap": min(budget, DEFAULT_SLOT_MEMORY_CAP)}

    @model_validator(mode="after")
    def _cap_within_budget(self) -> Settings:
        budget, cap = self.memory_budget, self.slot_memory_cap
        if budget is not None and cap > budget:
            raise ValueError(
                f"slot_memory_cap ({_size(cap)}) must not exceed memory_budget ({_size(budget)}): "
                "lower slot_memory_cap or raise memory_budget"
            )
        return self

    @model_validator(mode="after")
    def _thresholds_increase(self) -> Settings:
        levels = (self.elevated_percent, self.high_percent, self.emergency_percent)
        if not (0 < levels[0] < levels[1] < levels[2] < 100):
            raise ValueError(
                f"thresholds must increase strictly inside (0, 100): elevated_percent={levels[0]}, "
                f"high_percent={levels[1]}, emergency_percent={levels[2]}"
            )
        return self


def _size(value: int) -> str:
    """A byte count in the units it was most likely written in: 400000000 as 400.0MB, 2**26 as 64.0MiB."""
    return ByteSize(value).human_readable(decimal=value % 1000 == 0)
