"""Resources (API.md §5) and IO handlers (API.md §6) in the coordinator's process."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any, ClassVar

import pytest
from obstore.store import LocalStore
from pydantic import BaseModel

import rivers as rs
from tests.unit.conftest import make_repo


class Tracked(rs.Resource):
    """A resource that records its lifecycle in a class-level journal."""

    name: str = "tracked"
    journal: ClassVar[list[str]] = []

    def setup(self) -> None:
        self.journal.append(f"setup {self.name}")

    def teardown(self) -> None:
        self.journal.append(f"teardown {self.name}")


@pytest.fixture(autouse=True)
def _clear_journal() -> None:
    Tracked.journal.clear()


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# -- resources --------------------------------------------------------------------------------
def test_resources_injected_by_name_same_instance() -> None:
    seen: list[Any] = []
    res = Tracked(name="one")

    @rs.Asset
    def a(res: Tracked) -> int:
        seen.append(res)
        return 1

    @rs.Task
    def t(res: Tracked, a: int) -> int:
        seen.append(res)
        return a

    make_repo([a], tasks=[t], resources={"res": res}).materialize()
    assert seen == [res, res] and seen[0] is res


def test_setup_once_at_resolution_teardown_at_shutdown() -> None:
    @rs.Asset
    def a(res: Tracked) -> int:
        Tracked.journal.append("run a")
        return 1

    repo = make_repo([a], resources={"res": Tracked(name="r")})
    assert Tracked.journal == []  # the constructor sets nothing up
    repo.validate()
    assert Tracked.journal == []  # nor does validate(), as rivers 0.6
    assert repo.assets and Tracked.journal == ["setup r"]  # any other first use does
    repo.materialize()
    repo.materialize()
    assert Tracked.journal == ["setup r", "run a", "run a"]
    repo.shutdown()
    assert Tracked.journal == ["setup r", "run a", "run a", "teardown r"]


def test_context_manager_tears_resources_down() -> None:
    @rs.Asset
    def a(res: Tracked) -> int:
        return 1

    with make_repo([a], resources={"res": Tracked(name="cm"), "other": Tracked}) as repo:
        assert repo.materialize().success
        assert sorted(Tracked.journal) == ["setup cm", "setup tracked"]
    assert sorted(Tracked.journal[2:]) == ["teardown cm", "teardown tracked"]


def test_context_manager_tears_down_on_error() -> None:
    @rs.Asset
    def a(res: Tracked) -> int:
        raise ValueError("x")

    with pytest.raises(ValueError), make_repo([a], resources={"res": Tracked(name="e")}) as repo:
        repo.materialize()
    assert Tracked.journal == ["setup e", "teardown e"]


def test_unused_repository_tears_nothing_down() -> None:
    with make_repo([], resources={"res": Tracked}):
        pass
    assert Tracked.journal == []


def test_plain_base_model_class_resource_is_instantiated() -> None:
    class Settings(BaseModel):
        level: int = 4

    seen: list[Any] = []

    @rs.Asset
    def a(settings: Settings) -> int:
        seen.append(settings)
        return settings.level

    make_repo([a], resources={"settings": Settings}).materialize()
    assert isinstance(seen[0], Settings) and seen[0].level == 4


def test_upstream_asset_wins_over_a_resource_of_the_same_name() -> None:
    @rs.Asset
    def thing() -> int:
        return 5

    @rs.Asset
    def user(thing: int) -> int:
        return thing

    repo = make_repo([thing, user], resources={"thing": Tracked()})
    with pytest.warns(UserWarning, match="Resource key 'thing' shadows an asset"):
        repo.materialize()
    assert repo.load_node("user") == 5


# -- io_handler references and validation -----------------------------------------------------
class Store(rs.BaseIOHandler):
    """A non-process-local handler backed by a dict owned by the test."""

    values: ClassVar[dict[str, Any]] = {}

    def handle_output(self, context: rs.OutputContext, obj: Any) -> None:
        self.values[context.asset_name] = obj

    def load_input(self, context: rs.InputContext) -> Any:
        return self.values[context.asset_name]


def test_io_handler_key_references_a_resource() -> None:
    handler = Store()

    @rs.Asset(io_handler="store")
    def keyed() -> int:
        return 11

    repo = make_repo([keyed], resources={"store": handler})
    repo.materialize()
    assert repo.io_handler_for_output("keyed") is handler
    assert Store.values["keyed"] == 11
    assert repo.load_node("keyed") == 11


def test_io_handler_key_that_is_not_a_resource() -> None:
    @rs.Asset(io_handler="missing")
    def keyed() -> int:
        return 1

    repo = make_repo([keyed])
    with pytest.raises(rs.AssetDefinitionError, match="references resource 'missing' which is not in resources"):
        repo.materialize()


def test_io_handler_key_naming_a_non_handler_resource() -> None:
    @rs.Asset(io_handler="res")
    def keyed() -> int:
        return 1

    with pytest.raises(rs.AssetDefinitionError, match="'res' which does not implement the IOHandler protocol"):
        make_repo([keyed], resources={"res": Tracked()}).validate()


def test_duck_typed_io_handler_is_rejected() -> None:
    calls: list[str] = []

    class Duck:
        def handle_output(self, context: Any, obj: Any) -> None:
            calls.append("write")

        def load_input(self, context: Any) -> Any:
            return None

    with pytest.raises(rs.AssetDefinitionError, match="io_handler must be a BaseIOHandler subclass instance"):
        @rs.Asset(io_handler=Duck())  # type: ignore[arg-type]  # refused when defined, as rivers 0.6
        def ducked() -> int:
            calls.append("ran")
            return 1
    assert calls == []


def test_duck_typed_default_io_handler_is_rejected() -> None:
    class Duck:
        pass

    with pytest.raises(rs.ConfigurationError):
        make_repo([], default_io_handler=Duck()).validate()  # type: ignore[arg-type]


def test_duck_typed_input_override_is_rejected() -> None:
    @rs.Asset
    def up() -> int:
        return 1

    with pytest.raises(rs.AssetDefinitionError, match="io_handler must be a BaseIOHandler"):  # as rivers 0.6
        rs.AssetDef.input("up", io_handler=object())  # type: ignore[arg-type]


def test_base_io_handler_is_abstract() -> None:
    with pytest.raises(TypeError):
        rs.BaseIOHandler()  # type: ignore[abstract]


def test_default_io_handler_and_in_memory_default() -> None:
    handler = Store()

    @rs.Asset
    def plain() -> int:
        return 2

    repo = make_repo([plain])
    assert isinstance(repo.io_handler_for_output("plain"), rs.InMemoryIOHandler)
    assert rs.InMemoryIOHandler.process_local is True
    with_default = make_repo([plain], default_io_handler=handler)
    assert with_default.io_handler_for_output("plain") is handler
    with_default.materialize()
    assert Store.values["plain"] == 2


def test_load_node_passes_the_type_hint() -> None:
    hints: list[Any] = []

    class Hinted(rs.BaseIOHandler):
        def handle_output(self, context: rs.OutputContext, obj: Any) -> None:
            pass

        def load_input(self, context: rs.InputContext) -> Any:
            hints.append((context.asset_name, context.type_hint))
            return "v"

    @rs.Asset(io_handler=Hinted())
    def hinted() -> str:
        return "v"

    repo = make_repo([hinted])
    assert repo.load_node("hinted", type_hint=str) == "v"
    assert hints == [("hinted", str)]


def test_input_context_fields() -> None:
    seen: list[rs.InputContext] = []

    class Loader(rs.BaseIOHandler):
        def handle_output(self, context: rs.OutputContext, obj: Any) -> None:
            pass

        def load_input(self, context: rs.InputContext) -> Any:
            seen.append(context)
            return 1

    @rs.Asset(io_handler=Loader(), metadata={"m": "1"})
    def up() -> int:
        return 1

    @rs.Asset
    def down(up: float) -> float:
        return up

    make_repo([up, down]).materialize()
    (ctx,) = seen
    assert (ctx.asset_name, ctx.downstream_asset, ctx.asset_metadata) == ("up", "down", {"m": "1"})
    assert ctx.type_hint is float


# -- PickleIOHandler --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("prefix", "expected"), [("data/v1", "data/v1/pk.pkl"), ("", "pk.pkl"), ("out/", "out/pk.pkl")]
)
def test_pickle_file_layout_and_metadata(tmp_path: Path, prefix: str, expected: str) -> None:
    @rs.Asset(io_handler=rs.PickleIOHandler(LocalStore(str(tmp_path)), prefix=prefix))
    def pk() -> dict[str, int]:
        return {"a": 1}

    @rs.Asset
    def after(pk: dict[str, int]) -> int:
        return pk["a"]

    repo = make_repo([pk, after])
    result = repo.materialize()
    assert files_under(tmp_path) == [expected]  # no temporary or sidecar files
    with open(tmp_path / expected, "rb") as f:
        assert pickle.load(f) == {"a": 1}  # the bare value, standard pickle
    (out,) = result.step_results["pk"].outputs
    meta = out.metadata
    assert meta["path"] == rs.MetadataValue.text(expected)
    assert meta["serializer"] == rs.MetadataValue.text("pickle")
    assert meta["size_bytes"] == rs.MetadataValue.int(os.path.getsize(tmp_path / expected))
    assert isinstance(meta["write_duration_s"], rs.MetadataValue.Float) and meta["write_duration_s"].raw_value() >= 0
    assert repo.load_node("pk") == {"a": 1}
    assert repo.load_node("after") == 1


def test_pickle_handler_keeps_user_metadata(tmp_path: Path) -> None:
    @rs.Asset(io_handler=rs.PickleIOHandler(LocalStore(str(tmp_path))))
    def annotated(context: rs.AssetExecutionContext) -> rs.Output:
        context.add_output_metadata({"rows": 3, "who": "ctx"})
        return rs.Output([1, 2, 3], metadata={"who": "output"})

    result = make_repo([annotated]).materialize()
    meta = result.step_results["annotated"].outputs[0].metadata
    raw = {k: meta[k].raw_value() for k in ("rows", "who", "path")}
    assert raw == {"rows": 3, "who": "output", "path": "annotated.pkl"}


def test_external_asset_written_by_plain_pickle_loads(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    with open(tmp_path / "raw" / "source.pkl", "wb") as f:
        pickle.dump([3, 4], f)
    source = rs.Asset.external(
        name="source", io_handler=rs.PickleIOHandler(LocalStore(str(tmp_path)), prefix="raw"), kinds="file"
    )
    assert source.kinds == ["file"]

    @rs.Asset
    def summed(source: list[int]) -> int:
        return sum(source)

    repo = make_repo([source, summed])
    assert set(repo.assets) == {"source", "summed"}
    result = repo.materialize()
    assert result.materialized_assets == ["summed"]  # an external source is loaded, never run
    assert repo.load_node("summed") == 7
    assert repo.load_node("source") == [3, 4]
    assert files_under(tmp_path) == ["raw/source.pkl"]
    with pytest.raises(rs.AssetNotFoundError):
        repo.materialize(["nonexistent"])


def test_external_asset_without_handler_is_refused_at_definition() -> None:
    with pytest.raises(rs.AssetDefinitionError, match="External assets require an io_handler"):
        rs.Asset.external(name="source")


def test_materialization_calls_no_handler() -> None:
    writes: list[str] = []

    class Forbidden(rs.BaseIOHandler):
        def handle_output(self, context: rs.OutputContext, obj: Any) -> None:
            writes.append(context.asset_name)

        def load_input(self, context: rs.InputContext) -> Any:
            return "loaded by handler"

    @rs.Asset(io_handler=Forbidden())
    def persisted(context: rs.AssetExecutionContext) -> rs.Materialization:
        context.add_output_metadata({"a": 1})
        return rs.Materialization(metadata={"rows": rs.MetadataValue.int(9)}, data_version="dv")

    @rs.Asset
    def reader(persisted: str) -> str:
        return persisted

    repo = make_repo([persisted, reader])
    result = repo.materialize()
    assert writes == []
    (out,) = result.step_results["persisted"].outputs
    assert out.metadata == {"a": rs.MetadataValue.int(1), "rows": rs.MetadataValue.int(9)} and out.data_version == "dv"
    assert repo.load_node("reader") == "loaded by handler"


def test_output_context_fields() -> None:
    seen: list[rs.OutputContext] = []

    class Capture(rs.BaseIOHandler):
        def handle_output(self, context: rs.OutputContext, obj: Any) -> None:
            seen.append(context)

        def load_input(self, context: rs.InputContext) -> Any:
            return None

    @rs.Asset(io_handler=Capture(), metadata={"declared": "1"})
    def outctx() -> list[int]:
        return [1]

    make_repo([outctx]).materialize()
    (ctx,) = seen
    assert ctx.asset_name == "outctx"
    assert ctx.asset_metadata == {"declared": "1"}
    assert ctx.type_hint == list[int]
    assert ctx.output_metadata is None  # None while empty, as in rivers


def test_self_dependency_through_pickle_handler(tmp_path: Path) -> None:
    seen: list[Any] = []

    @rs.Asset(io_handler=rs.PickleIOHandler(LocalStore(str(tmp_path)), prefix="state"))
    def running_total(self: rs.SelfDependency[int]) -> int:
        seen.append(self.get_inner())
        return (self.get_inner() or 0) + 5

    repo = make_repo([running_total])
    repo.materialize()
    repo.materialize()
    assert seen == [None, 5]
    assert files_under(tmp_path) == ["state/running_total.pkl"]


def test_run_config_overriding_an_unknown_resource() -> None:
    @rs.Asset
    def a() -> int:
        return 1

    with pytest.raises(rs.ConfigurationError, match="'nope'"):
        make_repo([a], resources={"res": Tracked()}).materialize(config={"resources": {"nope": {"name": "x"}}})


def test_handler_errors_fail_the_step_and_skip_downstream() -> None:
    class Broken(rs.BaseIOHandler):
        def handle_output(self, context: rs.OutputContext, obj: Any) -> None:
            raise PermissionError("read-only store")

        def load_input(self, context: rs.InputContext) -> Any:
            raise FileNotFoundError("gone")

    @rs.Asset(io_handler=Broken())
    def cannot_write() -> int:
        return 1

    @rs.Asset
    def after(cannot_write: int) -> int:
        return cannot_write

    @rs.Asset(deps=[rs.AssetDef.input("fine", io_handler=Broken())])
    def cannot_read(fine: int) -> int:
        return fine

    @rs.Asset
    def fine() -> int:
        return 1

    result = make_repo([cannot_write, after, fine, cannot_read]).materialize(raise_on_error=False)
    assert dict(result.failed_assets) == {
        "cannot_write": "PermissionError: read-only store",
        "after": "ExecutionError: Skipped: upstream dependency failed",
        "cannot_read": "FileNotFoundError: gone",
    }


def test_load_input_once_per_upstream_downstream_pair() -> None:
    loads: list[tuple[str, str | None]] = []

    class Counting(rs.BaseIOHandler):
        def handle_output(self, context: rs.OutputContext, obj: Any) -> None:
            pass

        def load_input(self, context: rs.InputContext) -> Any:
            loads.append((context.asset_name, context.downstream_asset))
            return 1

    @rs.Asset(io_handler=Counting())
    def shared() -> int:
        return 1

    @rs.Asset
    def left(shared: int) -> int:
        return shared

    @rs.Asset
    def right(shared: int) -> int:
        return shared

    make_repo([shared, left, right]).materialize()
    assert sorted(loads) == [("shared", "left"), ("shared", "right")]


def test_process_local_handlers_keep_steps_in_the_coordinator(monkeypatch: pytest.MonkeyPatch, capfd: Any) -> None:
    import json

    import rivers.logs

    class LocalOnly(Store):
        process_local: ClassVar[bool] = True

    pids: list[int] = []

    @rs.Asset(io_handler=LocalOnly())
    def local_value() -> int:
        pids.append(os.getpid())
        return 1

    @rs.Asset
    def in_memory(local_value: int) -> int:
        pids.append(os.getpid())
        return local_value

    monkeypatch.setenv("RIVERS_LOG_FORMAT", "json")
    rivers.logs.reset()
    try:
        capfd.readouterr()
        repo = rs.CodeRepository([local_value, in_memory], default_executor=rs.Executor.parallel(1))
        assert repo.materialize().success
        records = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")]
    finally:
        rivers.logs.reset()
    assert pids == [os.getpid(), os.getpid()]
    moved = [r for r in records if r["event"] == "steps.moved_to_coordinator"]
    assert len(moved) == 1 and sorted(moved[0]["steps"]) == ["in_memory", "local_value"]
    assert moved[0]["level"] == "warning"
