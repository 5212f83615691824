"""Task names: a short name stands for one task; tasks of allowed modules that share one stop start-up."""

from __future__ import annotations

import pytest
from adaptive_scheduler.errors import ConfigError
from adaptive_scheduler.tasks import import_allowed, lookup
from adaptive_scheduler.tasks.registry import TaskInfo, name_clashes

A, B = "tests.fixtures.clash_a", "tests.fixtures.clash_b"


def info(path: str, name: str | None = None) -> TaskInfo:
    return TaskInfo(name or path.rpartition(".")[2], path)


@pytest.mark.parametrize(
    ("infos", "allowed", "expected"),
    [
        ([info("app.a.resize"), info("app.b.crop")], ("app.a", "app.b"), []),
        (
            [info("app.a.resize"), info("app.b.resize")],
            ("app.a", "app.b"),
            [
                "task name 'resize' is shared by app.a.resize and app.b.resize: give them distinct names "
                "with @task(name=...)"
            ],
        ),
        # a module the allowed one imports, not allowed itself: `resize` is still ambiguous
        ([info("app.a.resize"), info("app.helpers.resize")], ("app.a",), ["task name 'resize'"]),
        # neither allowed: neither can run, so nobody names them
        ([info("app.a.resize"), info("app.b.resize")], ("app.c",), []),
        # a name given with @task(name=...) clashes like a function's own
        ([info("app.a.resize"), info("app.b.shrink", "resize")], ("app.a", "app.b"), ["app.b.shrink"]),
        (
            [info("app.a.resize"), info("app.b.resize"), info("app.c.resize")],
            ("app.a",),
            ["shared by app.a.resize, app.b.resize and app.c.resize"],
        ),
    ],
)
def test_tasks_of_allowed_modules_sharing_a_short_name_are_reported_with_both_paths(
    infos: list[TaskInfo], allowed: tuple[str, ...], expected: list[str]
) -> None:
    lines = name_clashes(infos, allowed)
    assert len(lines) == len(expected)
    for line, part in zip(lines, expected, strict=True):
        assert part in line


def test_two_modules_with_the_same_task_name_import_and_each_task_is_found_by_its_path() -> None:
    # Given two job modules that each define @task() resize (importing them raises nothing)
    from tests.fixtures import clash_a, clash_b

    # Then each is found by its dotted path, the ambiguous short name by neither, a unique one still
    assert lookup(f"{A}.resize") == TaskInfo("resize", f"{A}.resize")
    assert lookup(f"{B}.resize") == TaskInfo("resize", f"{B}.resize")
    assert lookup("resize") is None
    assert lookup("thumbnail") == TaskInfo("thumbnail", f"{B}.thumbnail")
    assert (clash_a.resize(2), clash_b.resize(2)) == ("a:2", "b:2")


def test_allowing_both_modules_is_refused_with_one_line_naming_both_and_the_fix() -> None:
    with pytest.raises(ConfigError) as refused:
        import_allowed((A, B))
    assert str(refused.value) == (
        f"task name 'resize' is shared by {A}.resize and {B}.resize: give them distinct names with "
        "@task(name=...)"
    )


def test_an_allowed_module_that_does_not_import_is_refused_with_one_line() -> None:
    with pytest.raises(ConfigError, match="allowed module 'no_such_jobs' cannot be imported"):
        import_allowed(("no_such_jobs",))
