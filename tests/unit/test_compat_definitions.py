"""rivers 0.6 compatibility of definitions, contexts, external assets and CodeRepository.resolve/observe.

Every expectation here was observed with rivers 0.6.2 (messages: their key phrases).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from pydantic import BaseModel

import rivers as rs
from tests.unit.conftest import make_repo


class Recorder(rs.BaseIOHandler):
    """Counts what it is asked to do; loads 41 for anything."""

    writes: list[str] = []
    loads: list[str] = []

    def handle_output(self, context: rs.OutputContext, obj: Any) -> None:
        self.writes.append(context.asset_name)

    def load_input(self, context: rs.InputContext) -> Any:
        self.loads.append(context.asset_name)
        return 41


class Db(rs.Resource):
    url: str = "default"


class Cfg(BaseModel):
    n: int = 1


# -- item 3: external assets with observe functions ---------------------------------------------
def test_external_asset_requires_an_io_handler_at_definition() -> None:
    with pytest.raises(rs.AssetDefinitionError, match="External assets require an io_handler"):
        rs.Asset.external(name="raw")
    with pytest.raises(rs.AssetDefinitionError, match="External assets require an io_handler"):
        rs.Asset.external(tags=["a"])  # the decorator form, before any function
    with pytest.raises(rs.AssetDefinitionError, match="External assets require an io_handler"):
        rs.Asset.external(lambda: None, io_handler=None)


def test_external_decorator_makes_the_function_the_observe_function() -> None:
    def raw_orders() -> rs.Observation:
        return rs.Observation(data_version="1")

    decorator = rs.Asset.external(io_handler=Recorder(), tags=["t"])
    asset = decorator(raw_orders)
    assert isinstance(asset, rs.ExternalAsset) and not isinstance(asset, rs.SingleAsset)
    assert asset.name == "raw_orders" and asset.observe_fn is raw_orders
    assert asset.tags == ["t"] and asset.hooks is None and asset.is_async is False
    assert decorator.observe_fn is None  # the decorator itself is unchanged


def test_external_keeps_a_given_name_and_the_plain_form_still_works() -> None:
    handler = Recorder()

    def obs() -> None:
        return None

    plain = rs.Asset.external(name="src", io_handler=handler, kinds="file")
    assert plain.name == "src" and plain.observe_fn is None and plain.kinds == ["file"]
    assert plain.tags is None and plain.hooks is None
    observed = plain(obs)
    assert observed.name == "src" and observed.observe_fn is obs and observed.io_handler is handler
    assert rs.Asset.external(name="custom", io_handler=handler)(obs).name == "custom"
    assert rs.Asset.external(obs, io_handler=handler).name == "obs"  # `wraps` positional


def test_external_decorator_without_a_function_has_no_name() -> None:
    decorator = rs.Asset.external(io_handler=Recorder())
    with pytest.raises(rs.AssetDefinitionError, match="Asset has no name"):
        decorator.name  # noqa: B018
    assert repr(decorator) == "ExternalAsset(<no function yet>)"
    with pytest.raises(rs.AssetDefinitionError, match="Asset has no name"):
        make_repo([decorator]).validate()
    assert repr(decorator(lambda: None)) == "ExternalAsset(name='<lambda>')"


def test_external_async_observe_function() -> None:
    @rs.Asset.external(io_handler=Recorder())
    async def feed() -> rs.Observation:
        return rs.Observation()

    assert feed.is_async is True


def test_external_observe_function_bound_twice_or_not_callable() -> None:
    @rs.Asset.external(io_handler=Recorder())
    def once() -> None:
        return None

    with pytest.raises(rs.AssetDefinitionError, match="external asset 'once' already has an observe function"):
        once(lambda: None)
    with pytest.raises(rs.AssetDefinitionError, match="needs one function"):
        rs.Asset.external(io_handler=Recorder())(3)


def test_observation_fields_and_repr() -> None:
    empty = rs.Observation()
    assert (empty.output_name, empty.metadata, empty.data_version) == (None, None, None)
    assert repr(empty) == "Observation()"
    full = rs.Observation(output_name="a", data_version="v", metadata={"rows": 3, "ok": True})
    assert full.metadata == {"rows": 3, "ok": True}
    assert repr(full) == "Observation(output_name='a', data_version='v')"
    with pytest.raises(TypeError):
        rs.Observation({"x": 1})  # type: ignore[misc]  # keyword-only
    with pytest.raises(TypeError, match="list"):
        rs.Observation(metadata=[1])  # type: ignore[arg-type]


# -- item 2: CodeRepository.resolve() / observe() ------------------------------------------------
def test_resolve_validates_like_validate_and_returns_none() -> None:
    @rs.Asset
    def a() -> int:
        return 1

    assert make_repo([a]).resolve() is None

    @rs.Asset
    def broken(missing: int) -> int:
        return missing

    with pytest.raises(rs.GraphValidationError, match="unresolved input 'missing'"):
        make_repo([broken]).resolve()
    with pytest.raises(NotImplementedError, match="storage"):
        make_repo([a]).resolve(storage=object())


def test_observe_without_observable_externals_is_a_no_op() -> None:
    @rs.Asset
    def a() -> int:
        return 1

    plain = rs.Asset.external(name="plain", io_handler=Recorder())
    result = make_repo([a, plain]).observe()
    assert result.success is True and result.run_id == ""
    assert result.materialized_assets == [] and result.failed_assets == []


def test_observe_runs_observe_functions_and_merges_metadata() -> None:
    calls: list[Any] = []
    handler = Recorder()
    handler.writes.clear()

    @rs.Asset.external(io_handler=handler, tags=["t"], metadata={"k": "v"}, kinds="table", group="g")
    def raw_orders(context: rs.AssetExecutionContext) -> rs.Observation:
        calls.append((context.asset_name, context.tags, context.asset_metadata, context.kinds, context.group,
                      context.output_selection, context.config, context.log.name, context.run_id))
        context.add_output_metadata({"rows": 0, "source": "ctx"})
        context.register_data_version("from-context")
        return rs.Observation(metadata={"rows": 3}, data_version="v1")

    @rs.Asset.external(io_handler=handler)
    async def feed() -> rs.Observation:
        await asyncio.sleep(0)
        calls.append("feed")
        return rs.Observation(metadata={"n": 5})

    @rs.Asset.external(io_handler=handler)
    def silent(context: rs.AssetExecutionContext) -> None:
        context.register_data_version("only-context")
        calls.append("silent")

    @rs.Asset
    def down(raw_orders: int) -> int:
        calls.append("down")
        return raw_orders + 1

    repo = make_repo([raw_orders, feed, silent, down])
    result = repo.observe()
    assert result.success and result.failed_assets == []
    assert result.materialized_assets == ["feed", "raw_orders", "silent"]
    assert len(result.run_id) == 36
    assert ("raw_orders", ["t"], {"k": "v"}, ["table"], "g", [], None, "code-repo.assets.raw_orders",
            result.run_id) in calls
    assert "down" not in calls and handler.writes == []  # observing runs nothing else and writes nothing
    orders = result.step_results["raw_orders"].outputs[0]
    assert orders.metadata == {"rows": rs.MetadataValue.int(3), "source": rs.MetadataValue.text("ctx")}
    assert orders.data_version == "v1"
    assert result.step_results["feed"].outputs[0].metadata == {"n": rs.MetadataValue.int(5)}
    assert result.step_results["silent"].outputs[0].data_version == "only-context"


def test_observe_selection_passes_over_names_that_are_not_observable() -> None:
    seen: list[str] = []

    @rs.Asset.external(io_handler=Recorder())
    def one() -> None:
        seen.append("one")

    @rs.Asset.external(io_handler=Recorder())
    def two() -> None:
        seen.append("two")

    @rs.Asset
    def regular() -> int:
        seen.append("regular")
        return 1

    repo = make_repo([one, two, regular])
    assert repo.observe(["two"]).materialized_assets == ["two"] and seen == ["two"]
    assert repo.observe(["regular", "nope"]).run_id == ""  # as rivers 0.6: nothing to observe
    assert seen == ["two"]


def test_observe_gets_resources_and_typed_config() -> None:
    seen: list[Any] = []

    @rs.Asset.external(io_handler=Recorder())
    def with_db(context: rs.AssetExecutionContext[Cfg], db: Db) -> rs.Observation:
        seen.append((context.config, db.url))
        return rs.Observation(metadata={"url": db.url})

    result = make_repo([with_db], resources={"db": Db(url="x")}).observe()
    assert seen == [(Cfg(n=1), "x")]
    assert result.step_results["with_db"].outputs[0].metadata == {"url": rs.MetadataValue.text("x")}


def test_observe_failure_is_raised_after_all_ran_or_reported() -> None:
    ran: list[str] = []

    @rs.Asset.external(io_handler=Recorder())
    def boom() -> None:
        raise KeyError("k")

    @rs.Asset.external(io_handler=Recorder())
    def fine() -> None:
        ran.append("fine")

    repo = make_repo([boom, fine])
    with pytest.raises(KeyError):
        repo.observe()
    assert ran == ["fine"]
    result = repo.observe(raise_on_error=False)
    assert result.success is False and result.failed_assets == [("boom", "KeyError: 'k'")]
    assert result.materialized_assets == ["boom", "fine"]


def test_external_asset_with_observe_fn_is_still_loaded_not_run_by_materialize() -> None:
    handler = Recorder()
    handler.loads.clear()
    calls: list[str] = []

    @rs.Asset.external(io_handler=handler)
    def source() -> None:
        calls.append("observed")

    @rs.Asset
    def doubled(source: int) -> int:
        return source * 2

    repo = make_repo([source, doubled])
    result = repo.materialize()
    assert result.materialized_assets == ["doubled"] and calls == []
    assert handler.loads == ["source"] and repo.load_node("doubled") == 82
    assert set(repo.assets) == {"source", "doubled"}


# -- item 6: definitions --------------------------------------------------------------------------
def test_tags_and_hooks_are_none_when_not_given() -> None:
    @rs.Asset
    def a() -> int:
        return 1

    @rs.Asset(tags=[], hooks=[])
    def b() -> int:
        return 1

    @rs.Task
    def t() -> int:
        return 1

    @rs.Asset.from_multi(output_defs=[rs.AssetDef("m1")])
    def m() -> dict[str, int]:
        return {"m1": 1}

    assert (a.tags, a.hooks, a.deps) == (None, None, [])
    assert (b.tags, b.hooks) == ([], [])
    assert t.tags is None and rs.BashTask("sh", "true").tags is None
    assert (m.tags, m.hooks) == (None, None)


def test_tags_must_be_a_list_of_strings() -> None:
    with pytest.raises(TypeError, match="tags of 'x'"):
        rs.Asset(name="x", tags="abc")(lambda: 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="AssetDef 'a'"):
        rs.AssetDef("a", tags=[1])  # type: ignore[list-item]


def test_tagged_asset_runs_and_untagged_context_tags_are_none() -> None:
    seen: list[Any] = []

    @rs.Asset
    def plain(context: rs.AssetExecutionContext) -> int:
        seen.append(context.tags)
        return 1

    @rs.Asset(tags=["x"])
    def tagged(context: rs.AssetExecutionContext) -> int:
        seen.append(context.tags)
        return 1

    make_repo([plain, tagged]).materialize()
    assert sorted(seen, key=repr) == [None, ["x"]]


def test_asset_def_tags_kinds_and_deps() -> None:
    d = rs.AssetDef("a")
    assert (d.name, d.tags, d.kinds, d.group, d.code_version, d.deps) == ("a", None, [], None, None, [])
    d2 = rs.AssetDef("b", tags=["x"], kinds="t", deps=[rs.AssetDef.dep("u"), rs.AssetDef.input("v")])
    assert d2.tags == ["x"] and d2.kinds == ["t"]
    assert [(dep.name, dep.is_input, dep.metadata) for dep in d2.deps] == [("u", False, None), ("v", True, None)]
    assert repr(d2.deps) == "[DepDef.dep('u'), DepDef.input('v')]"
    assert isinstance(d2.deps[0], rs.DepDef) and not isinstance(d2.deps[0], rs.AssetDef)
    d.deps = [rs.AssetDef.dep("z")]
    assert [dep.name for dep in d.deps] == ["z"]


@pytest.mark.parametrize(
    ("deps", "message"),
    [
        (["u"], "'str' object is not an instance of 'DepDef'"),
        ([rs.AssetDef("u")], "'AssetDef' object is not an instance of 'DepDef'"),
        ([1], "'int' object is not an instance of 'DepDef'"),
        (rs.AssetDef.dep("u"), "'DepDef' object is not an instance of 'Sequence'"),
    ],
)
def test_deps_validation_messages(deps: Any, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        rs.AssetDef("a", deps=deps)
    with pytest.raises(TypeError, match=message):
        rs.Asset(deps=deps)(lambda: 1)
    with pytest.raises(TypeError, match=message):
        rs.Asset.from_multi(output_defs=[rs.AssetDef("z")], deps=deps)(lambda: {"z": 1})
    d = rs.AssetDef("a")
    with pytest.raises(TypeError, match=message):
        d.deps = deps


def test_multi_asset_output_deps_order_the_step() -> None:
    order: list[str] = []

    @rs.Asset
    def first() -> int:
        order.append("first")
        return 1

    @rs.Asset.from_multi(output_defs=[rs.AssetDef("n1", deps=[rs.AssetDef.dep("first")])])
    def n() -> dict[str, int]:
        order.append("n")
        return {"n1": 1}

    @rs.Asset.from_multi(output_defs=[rs.AssetDef("o1", deps=[rs.AssetDef.dep("ghost")])])
    def o() -> dict[str, int]:
        return {"o1": 1}

    result = make_repo([n, first]).materialize()
    assert order == ["first", "n"] and sorted(result.materialized_assets) == ["first", "n1"]
    with pytest.raises(rs.GraphValidationError, match="unresolved input 'ghost'"):
        make_repo([o]).validate()


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: rs.Asset(description="d"), "Asset.__new__() got an unexpected keyword argument 'description'"),
        (lambda: rs.Asset(lambda: 1, description="d"), "Asset.__new__() got an unexpected keyword argument"),
        (lambda: rs.Asset(bogus=1), "Asset.__new__() got an unexpected keyword argument 'bogus'"),
        (lambda: rs.Asset.from_multi(output_defs=[rs.AssetDef("z")], description="d"),
         "Asset.from_multi() got an unexpected keyword argument 'description'"),
        (lambda: rs.Asset.external(name="q", io_handler=Recorder(), description="d"),
         "Asset.external() got an unexpected keyword argument 'description'"),
    ],
)
def test_unknown_keywords_refused_when_the_decorator_is_built(build: Any, message: str) -> None:
    with pytest.raises(TypeError) as info:
        build()
    assert message in str(info.value)


def test_reserved_keywords_still_say_not_implemented() -> None:
    with pytest.raises(NotImplementedError, match="partitions_def"):
        rs.Asset(partitions_def="daily")(lambda: 1)
    with pytest.raises(NotImplementedError, match="partition_mapping"):
        rs.AssetDef.dep("u", partition_mapping=object())


# -- item 6: contexts built by hand -----------------------------------------------------------------
def test_asset_context_constructible_directly() -> None:
    c: rs.AssetExecutionContext[Any] = rs.AssetExecutionContext("x")
    assert (c.asset_name, c.run_id, c.tags, c.kinds, c.group, c.code_version) == ("x", None, None, [], None, None)
    assert (c.asset_metadata, c.is_multi_asset, c.output_selection, c.config) == (None, False, [], None)
    assert c.has_partition_key is False and c.partition is None and c.partition_time_window is None
    assert isinstance(c.log, logging.Logger) and c.log.name == "code-repo.assets.x"
    assert repr(c) == "AssetExecutionContext(asset_name='x')"
    c.register_data_version("v")
    assert c.drain_data_version() == "v" and c.drain_data_version() is None
    full: rs.AssetExecutionContext[Any] = rs.AssetExecutionContext(
        "y", tags=["t"], kinds=["k"], group="g", code_version="1", asset_metadata={"m": "n"},
        is_multi_asset=True, output_selection=["a", "b"], config={"q": 1}, run_id="r",
    )
    assert (full.tags, full.kinds, full.group, full.code_version) == (["t"], ["k"], "g", "1")
    assert (full.asset_metadata, full.output_selection, full.config, full.run_id) == ({"m": "n"}, ["a", "b"],
                                                                                      {"q": 1}, "r")
    assert rs.AssetExecutionContext[Cfg]("e", config=Cfg(n=2)).config == Cfg(n=2)
    assert rs.AssetExecutionContext(asset_name="k").asset_name == "k"
    with pytest.raises(TypeError):
        rs.AssetExecutionContext()  # type: ignore[call-arg]
    with pytest.raises(NotImplementedError, match="partitions"):
        rs.AssetExecutionContext("p", partition=object())


def test_task_context_constructible_directly() -> None:
    t: rs.TaskExecutionContext[Any] = rs.TaskExecutionContext("t")
    assert (t.task_name, t.tags, t.config, t.has_partition_key, t.partition) == ("t", None, None, False, None)
    assert t.log.name == "code-repo.tasks.t" and repr(t) == "TaskExecutionContext(task_name='t')"
    assert rs.TaskExecutionContext("t2", ["a"]).tags == ["a"]
    assert rs.TaskExecutionContext(task_name="q").task_name == "q"


def test_asset_function_unit_tested_with_a_hand_built_context() -> None:
    @rs.Asset
    def counted(context: rs.AssetExecutionContext) -> int:
        context.log.info("counting")
        context.add_output_metadata({"rows": 2})
        return 2

    context: rs.AssetExecutionContext[Any] = rs.AssetExecutionContext("counted")
    assert counted._asset_fn(context) == 2
    assert context.output_metadata == {"rows": rs.MetadataValue.int(2)}


def test_contexts_built_by_a_run() -> None:
    seen: dict[str, Any] = {}

    @rs.Asset
    def single(context: rs.AssetExecutionContext) -> int:
        seen["single"] = (context.output_selection, context.config, context.has_partition_key, context.log.name)
        return 1

    @rs.Asset
    def configured(context: rs.AssetExecutionContext[Cfg]) -> int:
        seen["configured"] = context.config
        return 1

    @rs.Asset.from_multi(output_defs=[rs.AssetDef("m1"), rs.AssetDef("m2")])
    def multi(context: rs.AssetExecutionContext) -> dict[str, int]:
        seen["multi"] = (context.output_selection, context.is_multi_asset, context.log.name)
        return {"m1": 1, "m2": 2}

    @rs.Task
    def task(context: rs.TaskExecutionContext) -> int:
        seen["task"] = (context.tags, context.config, context.has_partition_key, context.log.name)
        return 1

    make_repo([single, configured, multi], tasks=[task]).materialize()
    assert seen["single"] == ([], None, False, "code-repo.assets.single")
    assert seen["configured"] == Cfg()
    assert seen["multi"] == (["m1", "m2"], True, "code-repo.assets.multi")
    assert seen["task"] == (None, None, False, "code-repo.tasks.task")
