"""Context injection rules, typed config and the launch document (API.md §5, §9.6)."""

from __future__ import annotations

import logging
import os
import typing
from typing import Any

import pytest
from pydantic import BaseModel

import rivers as rs
from tests.pipelines import unit_future_annotations as fut
from tests.unit.conftest import make_repo


class MyConfig(BaseModel):
    rows: int = 10
    label: str = "default"


# -- injection --------------------------------------------------------------------------------
def test_first_parameter_annotated_with_any_name_gets_the_context() -> None:
    seen: list[Any] = []

    @rs.Asset(tags=["t1"], kinds="k", group="grp", code_version="cv", metadata={"owner": "me"})
    def described(ctx: rs.AssetExecutionContext) -> int:
        seen.append(ctx)
        return 1

    make_repo([described]).materialize()
    (ctx,) = seen
    assert type(ctx) is rs.AssetExecutionContext
    assert ctx.asset_name == "described"
    assert ctx.tags == ["t1"] and ctx.kinds == ["k"] and ctx.group == "grp" and ctx.code_version == "cv"
    assert ctx.asset_metadata == {"owner": "me"}
    assert ctx.is_multi_asset is False and ctx.output_selection == []  # as rivers 0.6: multi-assets only
    assert isinstance(ctx.log, logging.Logger) and ctx.log.name == "code-repo.assets.described"
    assert repr(ctx) == "AssetExecutionContext(asset_name='described')"


def test_first_parameter_named_context_without_annotation() -> None:
    seen: list[Any] = []

    @rs.Asset
    def unannotated(context) -> int:  # type: ignore[no-untyped-def]
        seen.append(context)
        return 1

    @rs.Task
    def task_unannotated(context) -> int:  # type: ignore[no-untyped-def]
        seen.append(context)
        return 2

    make_repo([unannotated], tasks=[task_unannotated]).materialize()
    assert [type(c) for c in seen] == [rs.AssetExecutionContext, rs.TaskExecutionContext]
    assert seen[1].task_name == "task_unannotated"
    assert seen[1].log.name == "code-repo.tasks.task_unannotated"
    assert repr(seen[1]) == "TaskExecutionContext(task_name='task_unannotated')"


@pytest.mark.parametrize("style", ["annotated", "named"])
def test_context_elsewhere_is_an_execution_error_before_any_step(style: str) -> None:
    calls: list[str] = []

    @rs.Asset
    def fine() -> int:
        calls.append("fine")
        return 1

    if style == "annotated":
        @rs.Asset
        def late(fine: int, ctx: rs.AssetExecutionContext) -> int:
            calls.append("late")
            return fine
    else:
        @rs.Asset
        def late(fine: int, context) -> int:  # type: ignore[no-untyped-def]
            calls.append("late")
            return fine

    repo = make_repo([fine, late])
    with pytest.raises(rs.ExecutionError, match="Context must be the first parameter of 'late'"):
        repo.materialize()
    assert calls == []


def test_context_logs_reach_the_step_result() -> None:
    @rs.Asset
    def chatty(context: rs.AssetExecutionContext) -> int:
        context.log.warning("hello from %s", "chatty")
        return 1

    result = make_repo([chatty]).materialize()
    messages = [entry.message for entry in result.step_results["chatty"].logs]
    assert "hello from chatty" in messages


# -- string annotations -----------------------------------------------------------------------
def test_future_annotations_module_behaves_the_same() -> None:
    fut.SEEN.clear()
    repo = fut.make_repo()
    result = repo.materialize(["base", "scaled", "tally", "report"], config={"scaled": {"factor": 5}})
    assert result.success
    assert type(fut.SEEN["base"]) is rs.AssetExecutionContext
    assert isinstance(fut.SEEN["scaled"].config, fut.FutureConfig)
    assert repo.load_node("scaled") == 15
    assert type(fut.SEEN["report"]) is rs.TaskExecutionContext
    assert repo.load_node("report") == "tally=15"
    repo.materialize(["base", "scaled", "tally"])
    assert fut.SEEN["tally"] == [None, 15]
    assert repo.load_node("tally") == 15 + 6


def test_future_annotations_return_type_is_checked() -> None:
    with pytest.raises(rs.AssetOutputValidationError, match="liar"):
        fut.make_repo().materialize(["base", "liar"])


def test_future_annotations_misplaced_context() -> None:
    repo = rs.CodeRepository([fut.base, fut.misplaced], default_executor=rs.Executor.in_process())
    with pytest.raises(rs.ExecutionError, match="Context must be the first parameter of 'misplaced'"):
        repo.validate()


def test_input_type_hint_reaches_the_io_handler_in_future_module() -> None:
    hints: list[Any] = []

    class Hinting(rs.BaseIOHandler):
        def handle_output(self, context: rs.OutputContext, obj: Any) -> None:
            hints.append(("out", context.type_hint))

        def load_input(self, context: rs.InputContext) -> Any:
            hints.append(("in", context.type_hint))
            return 4

    base = rs.Asset(fut.base._asset_fn, name="base", io_handler=Hinting())
    repo = rs.CodeRepository([base, fut.scaled], default_executor=rs.Executor.in_process())
    repo.materialize()
    assert hints == [("out", int), ("in", int)]
    assert typing.get_type_hints(fut.scaled._asset_fn)["base"] is int


# -- typed config -----------------------------------------------------------------------------
def configured_pipeline(seen: list[Any]) -> list[Any]:
    @rs.Asset
    def cfg(context: rs.AssetExecutionContext[MyConfig]) -> int:
        seen.append(context.config)
        return context.config.rows

    @rs.Task
    def tcfg(context: rs.TaskExecutionContext[MyConfig], cfg: int) -> str:
        seen.append(context.config)
        return context.config.label

    return [cfg, tcfg]


def test_config_defaults_without_run_config() -> None:
    seen: list[Any] = []
    cfg, tcfg = configured_pipeline(seen)
    make_repo([cfg], tasks=[tcfg]).materialize()
    assert seen == [MyConfig(), MyConfig()]


def test_launch_document_assets_section() -> None:
    seen: list[Any] = []
    cfg, tcfg = configured_pipeline(seen)
    repo = make_repo([cfg], tasks=[tcfg])
    repo.materialize(config={"assets": {"cfg": {"config": {"rows": 3}}, "tcfg": {"config": {"label": "x"}}}})
    assert seen == [MyConfig(rows=3), MyConfig(label="x")]
    assert repo.load_node("cfg") == 3 and repo.load_node("tcfg") == "x"


def test_flat_config_form() -> None:
    seen: list[Any] = []
    cfg, tcfg = configured_pipeline(seen)
    repo = make_repo([cfg], tasks=[tcfg])
    repo.materialize(config={"cfg": {"rows": 7}})
    assert seen == [MyConfig(rows=7), MyConfig()]


def test_job_execute_takes_config() -> None:
    seen: list[Any] = []
    cfg, tcfg = configured_pipeline(seen)
    repo = make_repo([cfg], tasks=[tcfg], jobs=[rs.Job("j", [cfg])])
    repo.get_job("j").execute(config={"assets": {"cfg": {"config": {"rows": 1}}}})
    assert seen == [MyConfig(rows=1)]


def test_unknown_section_is_a_configuration_error_before_any_step() -> None:
    seen: list[Any] = []
    cfg, tcfg = configured_pipeline(seen)
    repo = make_repo([cfg], tasks=[tcfg])
    with pytest.raises(rs.ConfigurationError, match="unknown section"):
        repo.materialize(config={"assets": {}, "bogus": {}})
    assert seen == []


def test_resources_section_overrides_a_copy_for_that_run() -> None:
    class Db(rs.Resource):
        url: str = "sqlite://"

    seen: list[str] = []

    @rs.Asset
    def query(db: Db) -> str:
        seen.append(db.url)
        return db.url

    db = Db()
    repo = make_repo([query], resources={"db": db})
    repo.materialize(config={"resources": {"db": {"url": "postgres://"}}})
    repo.materialize()
    assert seen == ["postgres://", "sqlite://"]
    assert db.url == "sqlite://"


def test_execution_section_picks_the_executor(tmp_path: Any) -> None:
    from obstore.store import LocalStore

    pids: list[int] = []

    @rs.Asset(io_handler=rs.PickleIOHandler(LocalStore(str(tmp_path))))  # not process-local
    def where() -> int:
        pids.append(os.getpid())
        return 1

    repo = rs.CodeRepository([where], default_executor=rs.Executor.parallel(1))
    result = repo.materialize(config={"execution": {"executor": "in_process"}})
    assert pids == [os.getpid()]
    assert result.step_results["where"].pid == os.getpid()
    with pytest.raises(rs.ConfigurationError):
        repo.materialize(config={"execution": {"executor": "warp"}})


def test_output_metadata_and_data_version_from_context() -> None:
    metadata: list[Any] = []

    class Capture(rs.BaseIOHandler):
        def handle_output(self, context: rs.OutputContext, obj: Any) -> None:
            metadata.append((dict(context.output_metadata), dict(context.asset_metadata)))

        def load_input(self, context: rs.InputContext) -> Any:
            raise AssertionError

    @rs.Asset(io_handler=Capture(), metadata={"declared": "yes"})
    def versioned(context: rs.AssetExecutionContext) -> rs.Output:
        context.add_output_metadata({"a": 1, "b": 1})
        context.register_data_version("v9")
        return rs.Output(5, metadata={"b": 2})

    result = make_repo([versioned]).materialize()
    two = {"a": rs.MetadataValue.int(1), "b": rs.MetadataValue.int(2)}  # MetadataValues, as in rivers 0.6
    assert metadata == [(two, {"declared": "yes"})]
    (out,) = result.step_results["versioned"].outputs
    assert out.data_version == "v9"
    assert out.metadata == two


def test_one_unresolvable_string_annotation_does_not_hide_the_others() -> None:
    fut.SEEN.clear()
    repo = rs.CodeRepository([fut.base, fut.partly_unresolvable], default_executor=rs.Executor.in_process())
    with pytest.raises(rs.AssetOutputValidationError, match="partly_unresolvable"):
        repo.materialize(config={"partly_unresolvable": {"factor": 9}})
    assert fut.SEEN["partly_unresolvable"].config == fut.FutureConfig(factor=9)
