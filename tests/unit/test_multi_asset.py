"""Asset.from_multi (API.md §2): dict return, generators, partial failure, errors, selection."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import rivers as rs
from tests.unit.conftest import make_repo

SKIPPED = "ExecutionError: Skipped: upstream dependency failed"


class Recording(rs.BaseIOHandler):
    """Keeps values like the in-memory handler and records every write."""

    def model_post_init(self, _: Any) -> None:
        self._values: dict[str, Any] = {}
        self._writes: list[str] = []

    def handle_output(self, context: rs.OutputContext, obj: Any) -> None:
        self._writes.append(context.asset_name)
        self._values[context.asset_name] = obj

    def load_input(self, context: rs.InputContext) -> Any:
        return self._values[context.asset_name]


def test_dict_return_writes_every_output_and_names_are_output_names() -> None:
    contexts: list[Any] = []

    @rs.Asset.from_multi(output_defs=[rs.AssetDef("a"), rs.AssetDef("b")], name="pair")
    def make_pair(context: rs.AssetExecutionContext) -> dict[str, int]:
        contexts.append(context)
        return {"a": 1, "b": 2}

    @rs.Asset
    def uses_b(b: int) -> int:
        return b * 10

    repo = make_repo([make_pair, uses_b])
    assert make_pair.name == "pair"
    assert repo.assets["a"] is make_pair and repo.assets["b"] is make_pair
    assert "pair" not in repo.assets
    result = repo.materialize()
    assert result.materialized_assets == ["a", "b", "uses_b"]
    assert (repo.load_node("a"), repo.load_node("b"), repo.load_node("uses_b")) == (1, 2, 20)
    (context,) = contexts  # one step, run once
    assert context.asset_name == "pair"
    assert context.is_multi_asset is True
    assert context.output_selection == ["a", "b"]


def test_single_asset_context_is_not_multi() -> None:
    seen: list[Any] = []

    @rs.Asset
    def single(context: rs.AssetExecutionContext) -> int:
        seen.append((context.is_multi_asset, context.output_selection))
        return 1

    make_repo([single]).materialize()
    assert seen == [(False, [])]  # as rivers 0.6: output_selection lists the outputs of multi-assets only


def test_generator_of_outputs_with_per_output_handler() -> None:
    handler = Recording()

    @rs.Asset.from_multi(output_defs=[rs.AssetDef("x"), rs.AssetDef("y", io_handler=handler)])
    def gen() -> Iterator[rs.Output]:
        yield rs.Output(1, output_name="x")
        yield rs.Output(2, output_name="y")

    repo = make_repo([gen])
    assert repo.materialize().materialized_assets == ["x", "y"]
    assert handler._writes == ["y"]
    assert repo.io_handler_for_output("y") is handler
    assert repo.load_node("x") == 1 and repo.load_node("y") == 2


def test_generator_partial_failure() -> None:
    calls: list[str] = []

    @rs.Asset.from_multi(output_defs=[rs.AssetDef("first"), rs.AssetDef("second"), rs.AssetDef("third")])
    def partial() -> Iterator[rs.Output]:
        yield rs.Output("one", output_name="first")
        raise RuntimeError("halfway")

    @rs.Asset
    def from_first(first: str) -> str:
        calls.append("from_first")
        return first.upper()

    @rs.Asset
    def from_second(second: str) -> str:
        calls.append("from_second")
        return second

    repo = make_repo([partial, from_first, from_second])
    result = repo.materialize(raise_on_error=False)
    assert result.success is False
    assert dict(result.failed_assets) == {
        "second": "RuntimeError: halfway",
        "third": "RuntimeError: halfway",
        "from_second": SKIPPED,
    }
    assert calls == ["from_first"]
    assert repo.load_node("first") == "one"
    assert repo.load_node("from_first") == "ONE"
    assert {"first", "second", "third", "from_first"} <= set(result.materialized_assets)
    with pytest.raises(RuntimeError, match="halfway"):
        repo.materialize()


def test_yielding_something_other_than_output() -> None:
    @rs.Asset.from_multi(output_defs=[rs.AssetDef("p"), rs.AssetDef("q")])
    def wrong() -> Iterator[Any]:
        yield rs.Output(1, output_name="p")
        yield 5

    result = make_repo([wrong]).materialize(raise_on_error=False)
    failed = dict(result.failed_assets)
    assert set(failed) == {"q"}
    assert "Generator multi-asset must yield Output" in failed["q"]


def test_output_without_output_name() -> None:
    @rs.Asset.from_multi(output_defs=[rs.AssetDef("p")])
    def unnamed() -> Iterator[rs.Output]:
        yield rs.Output(1)

    result = make_repo([unnamed]).materialize(raise_on_error=False)
    assert result.failed_assets[0][0] == "p"
    assert "output_name" in result.failed_assets[0][1]


def test_selected_output_never_yielded() -> None:
    @rs.Asset.from_multi(output_defs=[rs.AssetDef("p"), rs.AssetDef("q")])
    def forgetful() -> Iterator[rs.Output]:
        yield rs.Output(1, output_name="p")

    repo = make_repo([forgetful])
    result = repo.materialize(raise_on_error=False)
    assert [name for name, _ in result.failed_assets] == ["q"]
    assert "did not yield output 'q'" in result.failed_assets[0][1]
    assert repo.load_node("p") == 1


def test_output_selection_and_unselected_outputs_are_not_written() -> None:
    handler = Recording()
    seen: list[Any] = []

    @rs.Asset.from_multi(output_defs=[rs.AssetDef("s1"), rs.AssetDef("s2"), rs.AssetDef("s3")], io_handler=handler)
    def selective(context: rs.AssetExecutionContext) -> Iterator[rs.Output]:
        seen.append(list(context.output_selection))
        for name in ("s1", "s2", "s3"):
            yield rs.Output(name, output_name=name)

    @rs.Asset.from_multi(output_defs=[rs.AssetDef("d1"), rs.AssetDef("d2")], io_handler=handler)
    def dict_selective() -> dict[str, str]:
        return {"d1": "d1", "d2": "d2"}

    repo = make_repo([selective, dict_selective])
    result = repo.materialize(["s2", "d2"])
    assert result.success
    assert sorted(result.materialized_assets) == ["d2", "s2"]
    assert seen == [["s2"]]
    assert sorted(handler._writes) == ["d2", "s2"]


def test_unselected_output_of_a_generator_need_not_be_yielded() -> None:
    @rs.Asset.from_multi(output_defs=[rs.AssetDef("u1"), rs.AssetDef("u2")])
    def only_one(context: rs.AssetExecutionContext) -> Iterator[rs.Output]:
        for name in context.output_selection:
            yield rs.Output(name, output_name=name)

    assert make_repo([only_one]).materialize(["u1"]).success


def test_multi_asset_returning_a_non_dict_fails_every_output() -> None:
    @rs.Asset.from_multi(output_defs=[rs.AssetDef("n1"), rs.AssetDef("n2")])
    def not_a_dict() -> Any:
        return 3

    result = make_repo([not_a_dict]).materialize(raise_on_error=False)
    assert [name for name, _ in result.failed_assets] == ["n1", "n2"]


def test_async_generator_multi_asset_in_process() -> None:
    @rs.Asset.from_multi(output_defs=[rs.AssetDef("ag1"), rs.AssetDef("ag2")])
    async def agen() -> AsyncIterator[rs.Output]:
        yield rs.Output(1, output_name="ag1")
        yield rs.Output(2, output_name="ag2")

    @rs.Asset.from_multi(output_defs=[rs.AssetDef("ad1")])
    async def adict() -> dict[str, int]:
        return {"ad1": 3}

    assert agen.is_async and adict.is_async
    repo = make_repo([agen, adict])
    assert repo.materialize().success
    assert [repo.load_node(n) for n in ("ag1", "ag2", "ad1")] == [1, 2, 3]


def test_multi_asset_definition_errors() -> None:
    with pytest.raises(rs.AssetDefinitionError):
        rs.Asset.from_multi(output_defs=[])(lambda: {})
    with pytest.raises(rs.AssetDefinitionError):
        rs.Asset.from_multi(output_defs=[rs.AssetDef("a"), rs.AssetDef("a")])(lambda: {})


def test_downstream_of_a_failed_and_a_succeeded_output_is_skipped() -> None:
    calls: list[str] = []

    @rs.Asset.from_multi(output_defs=[rs.AssetDef("ok_out"), rs.AssetDef("bad_out")])
    def half() -> Iterator[rs.Output]:
        yield rs.Output(1, output_name="ok_out")
        raise ValueError("second half")

    @rs.Asset
    def both(ok_out: int, bad_out: int) -> int:
        calls.append("both")
        return ok_out + bad_out

    result = make_repo([half, both]).materialize(raise_on_error=False)
    assert calls == []
    assert dict(result.failed_assets) == {"bad_out": "ValueError: second half", "both": SKIPPED}


def test_multi_asset_hooks_resources_and_config() -> None:
    from pydantic import BaseModel

    seen: list[Any] = []

    class Res(rs.Resource):
        base: int = 100

    @rs.Asset.from_multi(
        output_defs=[rs.AssetDef("h1"), rs.AssetDef("h2")],
        hooks=[rs.Hook.success(lambda hc: seen.append((hc.asset_name, hc.output)))],
    )
    def hooked_multi(res: Res) -> dict[str, int]:
        return {"h1": res.base + 1, "h2": res.base + 2}

    repo = make_repo([hooked_multi], resources={"res": Res()})
    assert repo.materialize().success
    assert seen == [("h1", 101), ("h2", 102)]  # once per output, as rivers 0.6 (issue 10 item 5)
    assert issubclass(Res, BaseModel)


def test_multi_asset_retry_reruns_the_whole_step() -> None:
    attempts: list[int] = []

    @rs.Asset.from_multi(output_defs=[rs.AssetDef("r1"), rs.AssetDef("r2")], retry=rs.RetryPolicy(1))
    def retried() -> Iterator[rs.Output]:
        attempts.append(1)
        yield rs.Output(1, output_name="r1")
        if len(attempts) == 1:
            raise ValueError("transient")
        yield rs.Output(2, output_name="r2")

    repo = make_repo([retried])
    result = repo.materialize()
    assert result.success and len(attempts) == 2
    assert (repo.load_node("r1"), repo.load_node("r2")) == (1, 2)


def test_selection_takes_single_outputs_of_a_multi_asset_and_jobs_take_definitions() -> None:
    handler = Recording()

    @rs.Asset.from_multi(output_defs=[rs.AssetDef("j1"), rs.AssetDef("j2")], io_handler=handler)
    def jm(context: rs.AssetExecutionContext) -> dict[str, int]:
        return {name: 1 for name in context.output_selection}

    with pytest.raises(rs.GraphValidationError, match="Job assets must be Asset, Task, or BashTask instances"):
        rs.Job("only_j2", ["j2"])  # names are refused, as rivers 0.6 refuses them
    result = make_repo([jm]).materialize(["j2"])
    assert result.materialized_assets == ["j2"] and handler._writes == ["j2"]


def test_unknown_output_name_is_an_error() -> None:
    @rs.Asset.from_multi(output_defs=[rs.AssetDef("known"), rs.AssetDef("other")])
    def typo() -> dict[str, int]:
        return {"known": 1, "knwon": 2}

    @rs.Asset.from_multi(output_defs=[rs.AssetDef("g_known")])
    def gen_typo() -> Iterator[rs.Output]:
        yield rs.Output(1, output_name="g_knwon")

    result = make_repo([typo, gen_typo]).materialize(raise_on_error=False)
    failed = dict(result.failed_assets)
    assert "has no output 'knwon'" in failed["other"]
    assert "has no output 'g_knwon'" in failed["g_known"]
    assert "known" not in failed
