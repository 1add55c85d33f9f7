"""A run's config checked against the repository before the first step (rivers/launch.py, rivers/cli/config.py)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

import rivers as rs
from rivers.cli import UsageError
from rivers.cli.config import apply_set, launch_form, parse_value
from rivers.launch import check_launch

RAN: list[str] = []


class Cfg(BaseModel):
    n: int = 1
    label: str = "x"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inner: Cfg = Cfg()


class Db(rs.Resource):
    url: str = "sqlite://"


@rs.Asset
def up() -> int:
    RAN.append("up")
    return 1


@rs.Asset
def configured(context: rs.AssetExecutionContext[Cfg], up: int) -> int:
    RAN.append("configured")
    return context.config.n


@rs.Asset
def nested(context: rs.AssetExecutionContext[Strict]) -> int:
    return context.config.inner.n


def make_repo() -> rs.CodeRepository:
    RAN.clear()
    return rs.CodeRepository([up, configured, nested], resources={"db": Db()},
                             default_executor=rs.Executor.in_process())


def problems(config: dict[str, Any], strict: bool = True) -> list[str]:
    repo = make_repo()
    return check_launch(repo._resolve(), repo.resources, config, strict=strict)


def test_an_unknown_asset_fails_materialize_before_any_step() -> None:
    with pytest.raises(rs.ConfigurationError, match=r"run config names 'configurd'.*did you mean 'configured'"):
        make_repo().materialize(config={"assets": {"configurd": {"config": {"n": 2}}}})
    assert RAN == []


def test_python_leaves_fields_to_the_config_model_as_rivers_does() -> None:
    repo = make_repo()
    assert repo.materialize(config={"assets": {"configured": {"config": {"nn": 2}}}}).success
    assert repo.load_node("configured") == 1


def test_unknown_and_nested_fields_and_types_are_each_a_line() -> None:
    found = problems({"assets": {"configured": {"config": {"nn": 2, "label": 3}},
                                 "nested": {"config": {"inner": {"n": "x", "extra": 1}}}}})
    assert found == [
        "run config for asset 'configured': unknown field 'nn'; did you mean 'n'?",
        "run config for asset 'configured': field 'label': Input should be a valid string (got 3)",
        "run config for asset 'nested': field 'inner.n': Input should be a valid integer, unable to parse string "
        "as an integer (got 'x')",
    ]


def test_non_strict_checks_step_config_names_only_but_resource_overrides_whole() -> None:
    """rivers 0.6.2 refuses a resource override's unknown field or wrong type at launch (`config: resources.r.nope:
    Extra inputs are not permitted`); a wrong type used to reach the step as it was typed."""
    assert problems({"assets": {"configured": {"config": {"nn": 2}}}}, strict=False) == []
    assert problems({"resources": {"db": {"uri": "x"}}}, strict=False) == [
        "run config for resource 'db': unknown field 'uri'; did you mean 'url'?"]
    assert problems({"resources": {"dbs": {"url": "x"}}}, strict=False) == [
        "run config overrides resource 'dbs', which the repository does not have; did you mean 'db'?"]


def test_the_launch_form_with_metadata_and_a_non_dict_config() -> None:
    assert problems({"assets": {"configured": {"config": {"n": 2}, "metadata": {}}}}) == []
    (line,) = problems({"assets": {"configured": {"config": 3}}})
    assert "'config' must be a dict of field values, got int" in line


def test_an_output_of_a_multi_asset_points_at_the_multi_asset() -> None:
    @rs.Asset.from_multi(output_defs=[rs.AssetDef("left"), rs.AssetDef("right")])
    def pair(context: rs.AssetExecutionContext[Cfg]) -> dict[str, int]:
        return {"left": 1, "right": 2}

    repo = rs.CodeRepository([pair])
    found = check_launch(repo._resolve(), repo.resources, {"left": {"n": 1}}, strict=True)
    assert found == ["run config names 'left', an output of 'pair': configure 'pair' instead"]


@pytest.mark.parametrize(("raw", "value"), [("3", 3), ("1.5", 1.5), ("true", True), ("null", None),
                                            ('"3"', "3"), ("[1, 2]", [1, 2]), ("USD", "USD"), ("", "")])
def test_set_values_are_json_when_they_parse(raw: str, value: Any) -> None:
    assert parse_value(raw) == value


def test_set_merges_into_either_form() -> None:
    document = launch_form({"a": {"n": 1}})
    apply_set(document, "a.m=2")
    apply_set(document, "b.inner.n=3")
    assert document == {"assets": {"a": {"n": 1, "m": 2}, "b": {"config": {"inner": {"n": 3}}}}}
    launch = {"assets": {"a": {"config": {"n": 1}}}}
    apply_set(launch, "a.n=5")
    assert launch == {"assets": {"a": {"config": {"n": 5}}}}
    for bad in ("a=1", "a.=1", ".n=1", "a.n"):
        with pytest.raises(UsageError, match=r"expected ASSET\.FIELD=VALUE"):
            apply_set({}, bad)


def test_a_graph_task_is_named_by_its_step_key() -> None:
    @rs.Task
    def count(context: rs.TaskExecutionContext[Cfg]) -> int:
        return context.config.n

    @rs.Asset.from_graph()
    def counted() -> int:
        return count()

    repo = rs.CodeRepository([counted], default_executor=rs.Executor.in_process())
    graph = repo._resolve()
    assert check_launch(graph, {}, {"count": {"n": 2}}, strict=True) == [
        "run config names 'count', which is not an asset or task of the repository; did you mean 'counted/count'?"]
    assert check_launch(graph, {}, {"counted/count": {"n": "x"}}, strict=True) == [
        "run config for task 'counted/count': field 'n': Input should be a valid integer, unable to parse string "
        "as an integer (got 'x')"]
    assert repo.materialize(config={"counted/count": {"n": 4}}).success
    assert repo.load_node("counted") == 4


def test_an_unknown_section_suggests_the_close_one() -> None:
    with pytest.raises(rs.ConfigurationError, match=r"unknown section 'asets' \(did you mean 'assets'\?\)"):
        make_repo().materialize(config={"asets": {}, "resources": {}})
    assert RAN == []


# -- user-facing tracebacks ------------------------------------------------------------------------------
def test_a_step_traceback_without_rivers_frames() -> None:
    from rivers.cli.main import user_traceback

    @rs.Asset
    def boom() -> int:
        raise ValueError("bad row 3")

    result = rs.CodeRepository([boom], default_executor=rs.Executor.in_process()).materialize(raise_on_error=False)
    error = result.step_results["boom"].error
    assert error is not None and "rivers/runtime.py" in error.traceback  # the raw one has rivers' frames
    shown = user_traceback(error.traceback)
    assert "rivers/runtime.py" not in shown and "/rivers/" not in shown
    assert 'raise ValueError("bad row 3")' in shown
    assert __file__ in shown
    assert shown.splitlines()[0] == "Traceback (most recent call last):"
    assert shown.splitlines()[1] == "  [rivers frames hidden]"
    assert shown.splitlines()[-1] == "ValueError: bad row 3"


def test_frames_of_rivers_installed_elsewhere_are_hidden_too() -> None:
    from rivers.cli.main import user_traceback

    text = ('Traceback (most recent call last):\n'
            '  File "/app/.venv/lib/python3.11/site-packages/rivers/runtime.py", line 9, in run\n'
            '    value = fn()\n'
            '            ^^^^\n'
            '  File "/app/shop.py", line 3, in orders\n'
            '    raise KeyError("x")\n'
            "KeyError: 'x'")
    assert user_traceback(text).splitlines() == [
        "Traceback (most recent call last):", "  [rivers frames hidden]", '  File "/app/shop.py", line 3, in orders',
        '    raise KeyError("x")', "KeyError: 'x'"]


@pytest.mark.parametrize(("config", "phrase"), [
    ({"assets": ["configured"]}, "the assets section of a run config must be a dict keyed by asset, got list"),
    ({"resources": "db"}, "the resources section of a run config must be a dict keyed by resource key, got str"),
    ({"assets": {"configured": 3}}, "run config for 'configured' must be a dict, got int"),
])
def test_a_section_of_the_wrong_shape_is_named(config: dict[str, Any], phrase: str) -> None:
    assert problems(config) == [phrase]
    with pytest.raises(rs.ConfigurationError, match=phrase):
        make_repo().materialize(config=config)
    assert RAN == []


class Texts(BaseModel):
    version: str = "1"
    maybe: str | None = None
    count: int = 0
    ratio: float = 0.0
    inner: Cfg = Cfg()


def test_set_keeps_the_typed_text_for_a_text_field() -> None:
    import argparse

    from rivers.cli.config import check_run_config, run_config

    @rs.Asset
    def texts(context: rs.AssetExecutionContext[Texts]) -> Texts:
        return context.config

    repo = rs.CodeRepository([texts], default_executor=rs.Executor.in_process())
    sets = ["texts.version=1.10", "texts.maybe=007", "texts.count=5", "texts.ratio=2", "texts.inner.label=3",
            "texts.inner.n=4"]
    config = run_config(argparse.Namespace(config=None, set_fields=sets))
    check_run_config(repo, config)
    assert config == {"assets": {"texts": {"config": {
        "version": "1.10", "maybe": "007", "count": 5, "ratio": 2, "inner": {"label": "3", "n": 4}}}}}
    assert repo.materialize(config=config).success
    assert repo.load_node("texts") == Texts(version="1.10", maybe="007", count=5, ratio=2.0,
                                            inner=Cfg(n=4, label="3"))
    bad = run_config(argparse.Namespace(config=None, set_fields=["texts.count=many"]))
    with pytest.raises(UsageError, match=r"field 'count': Input should be a valid integer"):
        check_run_config(repo, bad)


def test_a_resource_override_is_validated_as_its_model_would_before_any_step() -> None:
    class Counter(rs.Resource):
        n: int = 1

    ran: list[int] = []

    @rs.Asset
    def counted(counter: Counter) -> int:
        ran.append(counter.n)
        return counter.n

    repo = rs.CodeRepository(assets=[counted], resources={"counter": Counter()},
                             default_executor=rs.Executor.in_process())
    with pytest.raises(rs.ConfigurationError, match="run config for resource 'counter': field 'n': Input should be a "
                                                    "valid integer"):
        repo.materialize(config={"resources": {"counter": {"n": "x"}}})
    assert ran == []
    assert repo.materialize(config={"resources": {"counter": {"n": "5"}}}).success
    assert ran == [5] and repo.load_node("counted") == 5  # coerced by the model, as pydantic does: not the text
