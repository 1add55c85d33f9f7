"""The public names of `rivers` (API.md §§1, 2, 8): factories, frozen values, reprs, attributes."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest

import rivers as rs
import rivers.exceptions as rex
from tests.unit.conftest import make_repo

PUBLIC_NAMES = {
    "Asset", "AssetDef", "AssetDefinitionError", "AssetExecutionContext", "AssetNotFoundError",
    "AssetOutputValidationError", "Backoff", "BaseIOHandler", "BashTask", "CodeRepository", "Compute",
    "ComputeEscalation", "ConfigurationError", "DynamicOutput", "ExecutionError", "Executor", "ExternalAsset",
    "FailureReason", "GraphAsset", "GraphValidationError", "Hook", "HookContext", "InMemoryIOHandler",
    "InputContext", "Job", "Materialization", "MetadataValue", "MultiAsset", "NodeNotFoundError", "Output",
    "OutputContext", "PickleIOHandler", "Resource", "RetryOn", "RetryPolicy", "RunResult", "SelfDependency",
    "SingleAsset", "Task", "TaskDefinitionError", "TaskExecutionContext",
    "DepDef", "Observation",
}
ERRORS = [
    "AssetDefinitionError", "AssetNotFoundError", "AssetOutputValidationError", "ConfigurationError",
    "ExecutionError", "GraphValidationError", "NodeNotFoundError", "TaskDefinitionError",
]


def test_every_public_name_is_exported_and_importable() -> None:
    assert set(rs.__all__) == PUBLIC_NAMES
    for name in PUBLIC_NAMES:
        assert getattr(rs, name) is not None, name


@pytest.mark.parametrize("name", ERRORS)
def test_exceptions_are_plain_exceptions_shared_with_rivers_exceptions(name: str) -> None:
    cls = getattr(rs, name)
    assert cls is getattr(rex, name)
    assert issubclass(cls, Exception)
    assert cls.__mro__[1] is Exception
    assert name in rex.__all__


# -- Executors (API.md §1) --------------------------------------------------------------------
def test_in_process_executor() -> None:
    ex = rs.Executor.in_process()
    assert isinstance(ex, rs.Executor.InProcess)
    assert isinstance(ex, rs.Executor)
    assert repr(ex) == "Executor.InProcess()"
    assert ex == rs.Executor.in_process()


def test_parallel_executor_resolves_max_workers_and_reprs() -> None:
    ex = rs.Executor.parallel()
    assert isinstance(ex, rs.Executor.Parallel) and isinstance(ex, rs.Executor)
    assert isinstance(ex.max_workers, int) and ex.max_workers >= 1
    assert ex.max_async_concurrent is None
    assert repr(rs.Executor.parallel(max_workers=2)) == "Executor.Parallel(max_workers=2)"
    assert (
        repr(rs.Executor.parallel(max_workers=2, max_async_concurrent=8))
        == "Executor.Parallel(max_workers=2, max_async_concurrent=8)"
    )
    assert rs.Executor.parallel(2, 8).max_async_concurrent == 8


def test_kubernetes_executor_defaults() -> None:
    ex = rs.Executor.kubernetes()
    assert isinstance(ex, rs.Executor.Kubernetes) and isinstance(ex, rs.Executor)
    assert ex.worker_image is None and ex.max_concurrent_steps is None and ex.namespace is None
    assert (ex.service_account, ex.worker_cpu, ex.worker_memory) == ("rivers-executor", "500m", "512Mi")
    custom = rs.Executor.kubernetes("img:1", max_concurrent_steps=3, namespace="ns")
    assert (custom.worker_image, custom.max_concurrent_steps, custom.namespace) == ("img:1", 3, "ns")
    with pytest.raises(TypeError):
        rs.Executor.kubernetes("img", 3)  # max_concurrent_steps is keyword-only


@pytest.mark.parametrize(
    "ex", [rs.Executor.in_process(), rs.Executor.parallel(2), rs.Executor.kubernetes()], ids=repr
)
def test_executor_values_are_frozen(ex: rs.Executor) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        ex.max_workers = 5  # type: ignore[attr-defined]
    assert hash(ex) == hash(ex)


# -- Asset definitions (API.md §2) ------------------------------------------------------------
def test_bare_asset_exposes_function_and_defaults() -> None:
    def raw() -> int:
        return 1

    asset = rs.Asset(raw)
    assert isinstance(asset, rs.SingleAsset) and isinstance(asset, rs.Asset)
    assert asset.name == "raw"
    assert asset._asset_fn is raw
    assert asset._asset_fn() == 1
    assert asset.is_async is False
    assert asset.tags is None and asset.kinds == [] and asset.metadata == {}
    assert asset.io_handler is None and asset.retry is None and asset.group is None


def test_asset_with_arguments_exposes_them() -> None:
    handler = rs.InMemoryIOHandler()
    policy = rs.RetryPolicy(2)
    compute = rs.Compute(cpu="1")

    @rs.Asset(name="renamed", tags=["a"], kinds="t", group="g", code_version="v1", io_handler=handler,
              metadata={"k": "v"}, deps=[rs.AssetDef.dep("x")], retry=policy, compute=compute)
    async def original() -> int:
        return 1

    assert isinstance(original, rs.SingleAsset)
    assert original.name == "renamed"
    assert original.tags == ["a"]
    assert original.kinds == ["t"]
    assert original.group == "g" and original.code_version == "v1"
    assert original.io_handler is handler
    assert original.metadata == {"k": "v"}
    assert [d.name for d in original.deps] == ["x"]
    assert original.retry is policy and original.compute is compute
    assert original.is_async is True
    assert inspect.iscoroutinefunction(original._asset_fn)


def test_kinds_list_is_kept() -> None:
    @rs.Asset(kinds=["a", "b"])
    def k() -> int:
        return 1

    assert k.kinds == ["a", "b"]


@pytest.mark.parametrize("kwarg", ["partitions_def", "automation_condition", "backfill_strategy", "pool", "pool_slots"])
def test_reserved_kwargs_raise_not_implemented(kwarg: str) -> None:
    with pytest.raises(NotImplementedError):
        @rs.Asset(**{kwarg: object()})
        def a() -> int:
            return 1


def test_reserved_kwargs_of_multi_asset_raise_not_implemented() -> None:
    with pytest.raises(NotImplementedError):
        @rs.Asset.from_multi(output_defs=[rs.AssetDef("x")], pool="p")
        def m() -> dict[str, int]:
            return {"x": 1}


def test_calling_an_asset_raises_asset_definition_error() -> None:
    @rs.Asset
    def callme() -> int:
        return 1

    with pytest.raises(rs.AssetDefinitionError):
        callme()
    assert callme._asset_fn() == 1


def test_isinstance_of_every_definition_kind() -> None:
    @rs.Asset.from_multi(output_defs=[rs.AssetDef("m1")])
    def multi() -> dict[str, int]:
        return {"m1": 1}

    @rs.Task
    def t() -> int:
        return 1

    external = rs.Asset.external(name="ext", io_handler=rs.InMemoryIOHandler())
    bash = rs.BashTask("b", "true")
    assert isinstance(multi, rs.MultiAsset) and isinstance(multi, rs.Asset)
    assert isinstance(external, rs.ExternalAsset) and isinstance(external, rs.Asset)
    assert isinstance(t, rs.Task) and not isinstance(t, rs.Asset)
    assert isinstance(bash, rs.BashTask) and isinstance(bash, rs.Task)
    assert multi.name == "multi" and t.name == "t" and bash.name == "b" and external.name == "ext"
    assert multi.is_async is False and t.is_async is False


def test_job_exposes_name_and_task_with_arguments() -> None:
    @rs.Task(name="named", tags=["x"])
    async def t() -> int:
        return 1

    assert t.name == "named" and t.tags == ["x"] and t.is_async is True
    assert rs.Job("j", [t]).name == "j"


def test_output_materialization_metadata_value_shapes() -> None:
    out = rs.Output(3, output_name="a", metadata={"m": 1}, data_version="v", tags=["t"])
    assert (out.value, out.output_name, out.metadata, out.data_version, out.tags) == (3, "a", {"m": 1}, "v", ["t"])
    with pytest.raises(TypeError):
        rs.Output(3, "a")  # type: ignore[misc]  # output_name is keyword-only
    mat = rs.Materialization(metadata={"rows": 2}, data_version="d")
    assert (mat.metadata, mat.data_version) == ({"rows": 2}, "d")
    assert rs.MetadataValue.int(3).raw_value() == 3
    assert rs.MetadataValue.float(1.5).raw_value() == 1.5
    assert rs.MetadataValue.text("x").raw_value() == "x"
    assert rs.MetadataValue.json({"a": [1]}).raw_value() == '{"a": [1]}'  # held as its JSON text, as in rivers
    assert rs.MetadataValue.bool(True).raw_value() is True
    assert rs.MetadataValue.timestamp(12.0).raw_value() == 12.0


def test_context_reprs() -> None:
    assert repr(rs.AssetExecutionContext(asset_name="x")) == "AssetExecutionContext(asset_name='x')"
    assert repr(rs.TaskExecutionContext(task_name="t")) == "TaskExecutionContext(task_name='t')"


def test_run_result_fields_and_fresh_run_ids() -> None:
    @rs.Asset
    def one() -> int:
        return 1

    repo = make_repo([one])
    first, second = repo.materialize(), repo.materialize()
    assert isinstance(first, rs.RunResult)
    assert first.success is True and first.failed_assets == [] and first.materialized_assets == ["one"]
    assert first.run_id != second.run_id
    import uuid

    assert uuid.UUID(first.run_id).version == 4


def test_executor_argument_checks() -> None:
    with pytest.raises(rs.ConfigurationError):
        rs.Executor.parallel(max_workers=0)
    with pytest.raises(rs.ConfigurationError):
        rs.Executor.parallel(max_async_concurrent=0)


def test_graph_asset_and_dynamic_output_names() -> None:
    @rs.Task
    def step_one() -> int:
        return 1

    @rs.Asset.from_graph()
    def small_graph() -> Any:
        return step_one()

    assert isinstance(small_graph, rs.GraphAsset) and small_graph.name == "small_graph"
    item = rs.DynamicOutput("k", 5)
    assert (item.key, item.value) == ("k", 5)
    repo = make_repo([small_graph])
    assert repo.materialize().success
    assert repo.load_node("small_graph") == 1
