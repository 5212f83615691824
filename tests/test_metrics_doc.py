"""The README's metrics table is the catalogue the daemon emits from."""

from __future__ import annotations

from pathlib import Path

from adaptive_scheduler.metrics_doc import replace_in


def test_the_readme_metrics_table_matches_the_catalogue() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert replace_in(readme) == readme, "README.md is stale: run `python -m adaptive_scheduler.metrics_doc`"
