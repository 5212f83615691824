"""The Grafana dashboard (systemd/grafana-dashboard.json), read without Grafana: every panel on the
Graphite datasource variable, every target a catalogue metric under StatsD's names, every catalogue
metric charted, the pressure bands at the governor's thresholds. Whether the targets match series a
real daemon and a real StatsD produce is tests/integration/test_statsd_e2e.py's part.
"""

from __future__ import annotations

import pytest
from adaptive_scheduler.governor.pressure import Level
from adaptive_scheduler.metrics import CATALOGUE
from adaptive_scheduler.settings.model import Settings

from tests.graphite_targets import (
    expand_braces,
    expand_variables,
    load_dashboard,
    matches,
    panels,
    parse,
    paths,
    representative_series,
    select,
    targets,
)

VALUES = {"prefix": "asched", "host": "web-1"}
DASHBOARD = load_dashboard()


def catalogue_series() -> dict[str, set[str]]:
    """Each catalogue metric's StatsD series under asched.web-1, placeholders filled in."""
    return {name: representative_series(name, kind, "asched.web-1") for name, (kind, _) in CATALOGUE.items()}


def charted_paths() -> list[str]:
    return [p for t in targets(DASHBOARD) for p in paths(parse(expand_variables(t.expression, VALUES)))]


def panel(title: str) -> dict:
    return next(p for p in panels(DASHBOARD) if p["title"] == title)


def test_every_panel_and_target_uses_the_graphite_datasource_variable() -> None:
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "graphite"
    source = {"type": "graphite", "uid": "${datasource}"}
    assert variables["host"]["datasource"] == source
    for item in panels(DASHBOARD):
        assert item["datasource"] == source, item["title"]
        assert item["targets"] and all(t["datasource"] == source for t in item["targets"]), item["title"]


def test_the_prefix_and_host_variables_pick_one_daemon() -> None:
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert variables["prefix"]["type"] == "textbox" and variables["prefix"]["query"] == "asched"
    assert Settings.model_fields["statsd_prefix"].default == "asched.{host}"
    host = variables["host"]
    assert host["type"] == "query" and host["query"]["target"] == "stats.gauges.$prefix.*"
    assert not host["multi"] and not host["includeAll"]
    assert all(t.expression.count("$prefix.$host.") >= 1 for t in targets(DASHBOARD))


def test_every_target_charts_catalogue_metrics_by_their_statsd_names() -> None:
    known = set().union(*catalogue_series().values())
    strays = [path for path in charted_paths() if not select(path, known)]
    assert not strays, f"targets naming no catalogue metric: {strays}"


def test_every_catalogue_metric_is_charted() -> None:
    charted = charted_paths()
    uncharted = [
        name
        for name, series in catalogue_series().items()
        if not any(matches(path, s) for path in charted for s in series)
    ]
    assert not uncharted, f"catalogue metrics no panel charts (add a target): {uncharted}"


def test_the_pressure_bands_are_the_governor_thresholds() -> None:
    chart = panel("Memory pressure %")
    steps = chart["fieldConfig"]["defaults"]["thresholds"]["steps"]
    levels = ("elevated", "high", "emergency")
    defaults = [Settings.model_fields[f"{level}_percent"].default for level in levels]
    assert [step["value"] for step in steps] == [None, *defaults] == [None, 70, 85, 95]
    assert chart["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] == "line+area"
    assert chart["fieldConfig"]["defaults"]["unit"] == "percent"


@pytest.mark.parametrize("title", ["Pressure level", "Pressure level over time"])
def test_the_level_panels_name_the_governor_levels(title: str) -> None:
    mapping = panel(title)["fieldConfig"]["defaults"]["mappings"][0]["options"]
    assert {int(value): shown["text"] for value, shown in mapping.items()} == {
        level.value: level.name for level in Level
    }


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    items = list(panels(DASHBOARD))
    assert len({p["id"] for p in items}) == len(items)
    cells = [
        (p["gridPos"]["x"] + dx, p["gridPos"]["y"] + dy)
        for p in items
        for dx in range(p["gridPos"]["w"])
        for dy in range(p["gridPos"]["h"])
    ]
    assert len(cells) == len(set(cells))
    assert all(p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in items)


@pytest.mark.parametrize(
    ("pattern", "series", "expected"),
    [
        ("stats.gauges.a.*.slots.busy", "stats.gauges.a.h.slots.busy", True),
        ("stats.gauges.a.*.slots.busy", "stats.gauges.a.h.x.slots.busy", False),
        ("a.{b,c}.d", "a.c.d", True),
        ("a.p{0,1}.d", "a.p1.d", True),
        ("a.p{0,1}.d", "a.p2.d", False),
        ("a.p[0-3].d", "a.p3.d", True),
        ("a.{x.y,z}", "a.z", True),
    ],
)
def test_graphite_globbing_is_per_segment(pattern: str, series: str, expected: bool) -> None:
    assert matches(pattern, series) is expected


def test_target_expressions_give_their_paths() -> None:
    expression = "alias(sumSeries(a.{b,c}.*, d.e), 'x, y')"
    assert paths(parse(expression)) == ["a.{b,c}.*", "d.e"]
    assert paths(parse("aliasByNode(stats.x.$host.y, -2, -1)")) == ["stats.x.$host.y"]
    assert expand_variables("a.$prefix.${host}.[[host]]", {"prefix": "p", "host": ["h1", "h2"]}) == (
        "a.p.{h1,h2}.{h1,h2}"
    )
    assert expand_braces("p{0,{1,2}}") == ["p0", "p1", "p2"]
