"""Reading the Grafana dashboard's Graphite targets as Graphite would: paths out of function calls,
template variables expanded, `*` / `[..]` / `{a,b}` globbing per path segment, `aliasByNode` legends.

The dashboard charts what StatsD makes of the daemon's metrics with `legacyNamespace: false` and the
other namespace settings at their defaults: `stats.gauges.<name>`, `stats.counters.<name>.rate` and
`.count`, `stats.timers.<name>.<stat>` (`mean`, `upper_90`, `count`, ...). `statsd_series` gives
those names for one metric name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parent.parent / "systemd" / "grafana-dashboard.json"

# What StatsD 0.9 (percentThreshold [90], the default) flushes for one timer, besides histograms.
TIMER_STATS = (
    "count_90", "mean_90", "upper_90", "sum_90", "sum_squares_90",
    "std", "upper", "lower", "count", "count_ps", "sum", "sum_squares", "mean", "median",
)  # fmt: skip


def statsd_series(kind: str, name: str) -> list[str]:
    """The Graphite paths StatsD (legacyNamespace: false) writes for metric `name` of `kind`."""
    if kind == "gauge":
        return [f"stats.gauges.{name}"]
    if kind == "counter":
        return [f"stats.counters.{name}.rate", f"stats.counters.{name}.count"]
    if kind == "timer":
        return [f"stats.timers.{name}.{stat}" for stat in TIMER_STATS]
    raise ValueError(f"unknown metric kind {kind!r}")


def load_dashboard(path: Path = DASHBOARD) -> dict:
    return json.loads(path.read_text())


def panels(dashboard: Mapping) -> Iterator[dict]:
    """Every panel, rows' nested panels included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


@dataclass(frozen=True)
class Target:
    panel: str
    ref_id: str
    expression: str


def targets(dashboard: Mapping) -> list[Target]:
    """The Graphite targets of every panel."""
    return [
        Target(panel.get("title", "?"), target.get("refId", "?"), target["target"])
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
        if "target" in target
    ]


# --- expressions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[object, ...]


@dataclass(frozen=True)
class SeriesPath:
    pattern: str


NUMBER = re.compile(r"-?\d+(\.\d+)?")
FUNCTION = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?=\s*\()")


class _Parser:
    """A recursive-descent reader of Graphite target expressions (the subset dashboards use)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.at = 0

    def parse(self) -> object:
        value = self.expression()
        self.skip_spaces()
        if self.at != len(self.text):
            raise ValueError(f"unexpected {self.text[self.at :]!r} in {self.text!r}")
        return value

    def skip_spaces(self) -> None:
        while self.at < len(self.text) and self.text[self.at].isspace():
            self.at += 1

    def expression(self) -> object:
        self.skip_spaces()
        char = self.text[self.at : self.at + 1]
        if char in ("'", '"'):
            end = self.text.index(char, self.at + 1)
            value, self.at = self.text[self.at + 1 : end], end + 1
            return value
        if call := FUNCTION.match(self.text, self.at):
            self.at = self.text.index("(", call.end()) + 1
            return Call(call.group(), self.arguments())
        token = self.bare_token()
        if NUMBER.fullmatch(token):
            return float(token)
        if token in ("true", "false", "True", "False", "None", "null"):
            return token
        if not token or token.startswith("#"):
            raise ValueError(f"expected a series path at {self.at} in {self.text!r}, found {token!r}")
        return SeriesPath(token)

    def arguments(self) -> tuple[object, ...]:
        args: list[object] = []
        self.skip_spaces()
        if self.text.startswith(")", self.at):
            self.at += 1
            return ()
        while True:
            args.append(self.expression())
            self.skip_spaces()
            char = self.text[self.at : self.at + 1]
            self.at += 1
            if char == ")":
                return tuple(args)
            if char != ",":
                raise ValueError(f"expected ',' or ')' at {self.at - 1} in {self.text!r}")

    def bare_token(self) -> str:
        """A path or a literal: up to a ',' or ')' outside braces."""
        start, depth = self.at, 0
        while self.at < len(self.text):
            char = self.text[self.at]
            if char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
            elif depth == 0 and (char in ",)" or char.isspace()):
                break
            self.at += 1
        return self.text[start : self.at]


def parse(expression: str) -> object:
    return _Parser(expression).parse()


def paths(node: object) -> list[str]:
    """Every series path pattern in a parsed expression, in order."""
    if isinstance(node, SeriesPath):
        return [node.pattern]
    if isinstance(node, Call):
        return [p for arg in node.args for p in paths(arg)]
    return []


# --- template variables -------------------------------------------------------------------------


def expand_variables(text: str, values: Mapping[str, str | list[str]]) -> str:
    """`$name`, `${name}` and `[[name]]` replaced as Grafana does for Graphite (several values: `{a,b}`)."""

    def value(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        if name not in values:
            raise KeyError(f"template variable ${name} has no value")
        chosen = values[name]
        if isinstance(chosen, str):
            return chosen
        return chosen[0] if len(chosen) == 1 else "{" + ",".join(chosen) + "}"

    return re.sub(r"\$\{(\w+)\}|\[\[(\w+)\]\]|\$(\w+)", value, text)


# --- globbing -----------------------------------------------------------------------------------


def expand_braces(segment: str) -> list[str]:
    """`p{0,1}x` -> ['p0x', 'p1x'] (nested braces too), as Graphite expands a path segment."""
    start = segment.find("{")
    if start < 0:
        return [segment]
    depth = 0
    for end in range(start, len(segment)):
        depth += {"{": 1, "}": -1}.get(segment[end], 0)
        if depth == 0:
            break
    else:
        raise ValueError(f"unbalanced braces in {segment!r}")
    head, body, tail = segment[:start], segment[start + 1 : end], segment[end + 1 :]
    choices = split_outside_braces(body, ",")
    return [expanded for choice in choices for expanded in expand_braces(head + choice + tail)]


def split_outside_braces(text: str, separator: str) -> list[str]:
    """`text` split at `separator`, except where it stands inside braces."""
    parts, depth, begin = [], 0, 0
    for at, char in enumerate(text):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if char == separator and depth == 0:
            parts.append(text[begin:at])
            begin = at + 1
    parts.append(text[begin:])
    return parts


def split_path(pattern: str) -> list[str]:
    """A path's segments ('.' inside braces does not split)."""
    return split_outside_braces(pattern, ".")


def matches(pattern: str, series: str) -> bool:
    """Whether Graphite's glob `pattern` selects `series` (same segment count, fnmatch per segment)."""
    want, have = split_path(pattern), series.split(".")
    return len(want) == len(have) and all(
        any(fnmatchcase(part, alternative) for alternative in expand_braces(glob))
        for glob, part in zip(want, have, strict=True)
    )


def select(pattern: str, series: set[str]) -> set[str]:
    return {name for name in series if matches(pattern, name)}


def alias_by_node(series: str, nodes: tuple[int, ...]) -> str:
    """Graphite's aliasByNode legend: the chosen segments (negative counts from the end), joined by '.'."""
    parts = series.split(".")
    return ".".join(parts[n] for n in nodes)


def find_calls(node: object, name: str) -> Iterator[Call]:
    if isinstance(node, Call):
        if node.name == name:
            yield node
        for arg in node.args:
            yield from find_calls(arg, name)


# --- the metric catalogue -----------------------------------------------------------------------

PLACEHOLDERS = {"{p}": ("p0", "p1", "p2", "p3"), "{n}": ("0", "1"), "{task}": ("add",)}
PLACEHOLDER_REGEX = {"{p}": "p[0-3]", "{n}": r"\d+", "{task}": "[A-Za-z0-9_-]+"}


def catalogue_regex(name: str, kind: str) -> re.Pattern[str]:
    """The StatsD series of catalogue metric `name` (placeholders as regular expressions)."""
    pattern = re.escape(name)
    for placeholder, part in PLACEHOLDER_REGEX.items():
        pattern = pattern.replace(re.escape(placeholder), part)
    suffix = {"gauge": "", "counter": r"\.(rate|count)", "timer": r"\.[A-Za-z0-9_]+"}[kind]
    return re.compile(rf"stats\.{kind}s\.{pattern}{suffix}")


def representative_series(name: str, kind: str, prefix: str) -> set[str]:
    """StatsD's series for catalogue metric `name` under `prefix`, its placeholders filled in."""
    names = [name]
    for placeholder, choices in PLACEHOLDERS.items():
        names = [n.replace(placeholder, choice) for n in names for choice in choices]
    return {series for n in set(names) for series in statsd_series(kind, f"{prefix}.{n}")}
