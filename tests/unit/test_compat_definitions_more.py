"""More definition forms as rivers 0.6.2 has them (audit /tmp/cmp, items 1, 2, 4, 5 and AssetDef.input checks).

- `Asset.from_graph` bare, `Asset.from_graph(fn)`, `Asset.from_graph(wraps=fn)`; `Asset.from_multi(fn, ...)`,
  `Asset.from_multi(wraps=fn, ...)`; `Asset(wraps=fn)`, `Task(wraps=fn)`.
- A generator multi-asset may yield `Materialization` / `Observation` (no handler write).
- `AssetDef(type_hint=...)`: a per-output check of the value, and the output's `OutputContext.type_hint`.
- `AssetDef.input(name)` naming no input parameter of the function: ValueError when defined.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import rivers as rs
from tests.unit.conftest import make_repo


class Recording(rs.BaseIOHandler):
    """Keeps values like the in-memory handler and records every write with its type hint."""

    def model_post_init(self, _: Any) -> None:
        self._values: dict[str, Any] = {}
        self._writes: list[tuple[str, Any]] = []

    def handle_output(self, context: rs.OutputContext, obj: Any) -> None:
        self._writes.append((context.asset_name, context.type_hint))
        self._values[context.asset_name] = obj

    def load_input(self, context: rs.InputContext) -> Any:
        return self._values[context.asset_name]


@rs.Task
def items() -> list[int]:
    return [1, 2, 3]


@rs.Task
def double(x: int) -> int:
    return x * 2


@rs.Task
def total(xs: list[int]) -> int:
    return sum(xs)


def _body() -> Any:
    return total(items().map(double).collect())


# -- 1. Asset.from_graph without parentheses, and called on a function ---------------------------------------------


def test_bare_from_graph_decorator_builds_a_graph_asset() -> None:
    @rs.Asset.from_graph
    def g() -> Any:
        return total(items().map(double).collect())

    assert isinstance(g, rs.GraphAsset) and g.name == "g"
    repo = make_repo([g])
    assert repo.materialize().success
    assert repo.load_node("g") == 12


def test_from_graph_called_on_a_function_builds_a_graph_asset() -> None:
    direct = rs.Asset.from_graph(_body)
    named = rs.Asset.from_graph(wraps=_body, name="gg")
    assert isinstance(direct, rs.GraphAsset) and direct.name == "_body"
    assert isinstance(named, rs.GraphAsset) and named.name == "gg"
    repo = make_repo([named])
    repo.materialize()
    assert repo.load_node("gg") == 12


def test_from_graph_with_keywords_is_still_a_decorator() -> None:
    decorator = rs.Asset.from_graph(name="g3", metadata={"k": "v"})
    assert not isinstance(decorator, rs.Asset)
    g3 = decorator(_body)
    assert isinstance(g3, rs.GraphAsset) and (g3.name, g3.metadata) == ("g3", {"k": "v"})
    assert rs.Asset.from_graph()(_body).name == "_body"


def test_from_graph_refuses_an_unknown_keyword_when_built() -> None:
    with pytest.raises(TypeError, match=r"Asset\.from_graph\(\) got an unexpected keyword argument 'bogus'"):
        rs.Asset.from_graph(bogus=1)


# -- 2. Asset.from_multi(fn, ...) / wraps=, Asset(wraps=), Task(wraps=) ---------------------------------------------


def _pair() -> dict[str, int]:
    return {"x": 1, "y": 2}


def test_from_multi_called_on_a_function_builds_a_multi_asset() -> None:
    positional = rs.Asset.from_multi(_pair, output_defs=[rs.AssetDef("x"), rs.AssetDef("y")])
    keyword = rs.Asset.from_multi(wraps=_pair, output_defs=[rs.AssetDef("x"), rs.AssetDef("y")], name="mm")
    assert isinstance(positional, rs.MultiAsset) and positional.name == "_pair"
    assert isinstance(keyword, rs.MultiAsset) and keyword.name == "mm"
    assert positional.output_names == ["x", "y"]
    repo = make_repo([keyword])
    assert sorted(repo.materialize().materialized_assets) == ["x", "y"]
    assert (repo.load_node("x"), repo.load_node("y")) == (1, 2)


def test_from_multi_with_keywords_is_still_a_decorator() -> None:
    decorator = rs.Asset.from_multi(output_defs=[rs.AssetDef("x"), rs.AssetDef("y")])
    assert not isinstance(decorator, rs.Asset)
    assert isinstance(decorator(_pair), rs.MultiAsset)


def test_asset_and_task_take_wraps() -> None:
    def g() -> int:
        return 1

    asset = rs.Asset(wraps=g)
    named = rs.Asset(wraps=g, name="n")
    assert isinstance(asset, rs.SingleAsset) and (asset.name, named.name) == ("g", "n")
    assert rs.Asset(wraps=None, name="k")(g).name == "k"
    task = rs.Task(wraps=g)
    assert isinstance(task, rs.Task) and task.name == "g" and task() == 1
    assert rs.Task(wraps=g, name="tt").name == "tt"
    assert rs.Task(wraps=None, name="t2")(g).name == "t2"
    with pytest.raises(TypeError, match="got multiple values for argument 'wraps'"):
        rs.Asset(g, wraps=g)
    with pytest.raises(TypeError, match="got multiple values for argument 'wraps'"):
        rs.Task(g, wraps=g)
    repo = make_repo([asset])
    repo.materialize()
    assert repo.load_node("g") == 1


# -- 3. a generator multi-asset may yield Materialization / Observation --------------------------------------------


def test_generator_multi_asset_may_yield_materialization_and_observation() -> None:
    handler = Recording()

    @rs.Asset.from_multi(
        output_defs=[rs.AssetDef("p"), rs.AssetDef("q"), rs.AssetDef("r")], io_handler=handler
    )
    def m() -> Iterator[Any]:
        yield rs.Materialization(output_name="p", metadata={"a": 1}, data_version="v1")
        yield rs.Observation(output_name="q", metadata={"b": 2})
        yield rs.Output(3, output_name="r")

    result = make_repo([m]).materialize(raise_on_error=False)
    assert result.failed_assets == []
    assert sorted(result.materialized_assets) == ["p", "q", "r"]
    assert [name for name, _ in handler._writes] == ["r"]  # the asset persisted p and q itself


def test_generator_multi_asset_error_names_what_may_be_yielded() -> None:
    @rs.Asset.from_multi(output_defs=[rs.AssetDef("p"), rs.AssetDef("q")])
    def m() -> Iterator[Any]:
        yield 5

    failed = dict(make_repo([m]).materialize(raise_on_error=False).failed_assets)
    assert set(failed) == {"p", "q"}
    assert failed["p"] == (
        "AssetOutputValidationError: Generator multi-asset must yield Output(...), Observation(...), "
        "or Materialization(...), 'm' yielded int"
    )


def test_yielded_materialization_without_output_name_is_named_in_the_error() -> None:
    @rs.Asset.from_multi(output_defs=[rs.AssetDef("p")])
    def m() -> Iterator[Any]:
        yield rs.Materialization()

    failed = dict(make_repo([m]).materialize(raise_on_error=False).failed_assets)
    assert "Materialization yielded by 'm' has no output_name" in failed["p"]


# -- 4. AssetDef(type_hint=...) -----------------------------------------------------------------------------------


def test_asset_def_type_hint_is_accepted_and_reaches_the_output_context() -> None:
    assert rs.AssetDef("x", type_hint=int).type_hint is int
    assert rs.AssetDef("x").type_hint is None
    handler = Recording()

    @rs.Asset.from_multi(
        output_defs=[rs.AssetDef("p", type_hint=int), rs.AssetDef("q", type_hint=list[int]), rs.AssetDef("r")],
        io_handler=handler,
    )
    def m() -> dict[str, Any]:
        return {"p": 1, "q": [1, 2], "r": "free"}

    result = make_repo([m]).materialize()
    assert sorted(result.materialized_assets) == ["p", "q", "r"]
    assert dict(handler._writes) == {"p": int, "q": list[int], "r": None}  # r: not the function's `-> dict`


def test_asset_def_type_hint_checks_each_output_value() -> None:
    @rs.Asset.from_multi(output_defs=[rs.AssetDef("p", type_hint=int), rs.AssetDef("q", type_hint=str)])
    def m() -> dict[str, Any]:
        return {"p": 1, "q": 2}

    repo = make_repo([m])
    result = repo.materialize(raise_on_error=False)
    assert result.failed_assets == [
        ("q", "AssetOutputValidationError: 'q' of multi-asset 'm' returned int, which does not match its "
              "AssetDef type_hint str"),
    ]
    assert repo.load_node("p") == 1
    with pytest.raises(rs.AssetOutputValidationError, match="'q' of multi-asset 'm' returned int"):
        repo.materialize()


def test_asset_def_type_hint_checks_yielded_outputs_and_skips_materializations() -> None:
    @rs.Asset.from_multi(output_defs=[rs.AssetDef("p", type_hint=int), rs.AssetDef("q", type_hint=int)])
    def m() -> Iterator[Any]:
        yield rs.Materialization(output_name="p")
        yield rs.Output("not an int", output_name="q")

    failed = dict(make_repo([m]).materialize(raise_on_error=False).failed_assets)
    assert set(failed) == {"q"}
    assert "does not match its AssetDef type_hint int" in failed["q"]


def test_asset_def_type_hint_as_a_string_is_refused() -> None:
    with pytest.raises(rs.AssetDefinitionError, match="type_hint must be a type, not the string 'int'"):
        rs.AssetDef("x", type_hint="int")


# -- 5. AssetDef.input naming no parameter --------------------------------------------------------------------------


def test_asset_def_input_must_name_a_parameter() -> None:
    def down(a: int, b: str) -> int:
        return 1

    message = (
        "AssetDef.input('up') of asset 'down' does not match any parameter on the function "
        "(available parameters: 'a', 'b')"
    )
    with pytest.raises(ValueError) as info:
        rs.Asset(deps=[rs.AssetDef.input("up")])(down)
    assert str(info.value) == message
    with pytest.raises(ValueError, match=r"AssetDef\.input\('up'\) of asset 'nm' does not match"):
        rs.Asset(down, name="nm", deps=[rs.AssetDef.input("up")])
    with pytest.raises(ValueError, match=r"available parameters: none\)"):
        rs.Asset(deps=[rs.AssetDef.input("up")])(lambda: 1)


def test_asset_def_input_naming_a_parameter_with_a_default_is_refused() -> None:
    def down(up: int = 3) -> int:
        return up

    with pytest.raises(ValueError, match="names the parameter 'up', which has a default value"):
        rs.Asset(deps=[rs.AssetDef.input("up")])(down)


def test_asset_def_input_of_a_multi_asset_must_name_a_parameter() -> None:
    def m(a: int) -> dict[str, int]:
        return {"x": a}

    with pytest.raises(ValueError, match=r"AssetDef\.input\('up'\) of asset 'm' does not match"):
        rs.Asset.from_multi(output_defs=[rs.AssetDef("x")], deps=[rs.AssetDef.input("up")])(m)
    with pytest.raises(ValueError, match=r"AssetDef\.input\('up'\) of asset 'm' does not match"):
        rs.Asset.from_multi(output_defs=[rs.AssetDef("x", deps=[rs.AssetDef.input("up")])])(m)


def test_asset_def_input_matching_a_parameter_and_dep_still_work() -> None:
    @rs.Asset
    def up() -> int:
        return 2

    @rs.Asset(deps=[rs.AssetDef.input("up", metadata={"k": "v"})])
    def down(up):  # type: ignore[no-untyped-def]  # unannotated parameters are inputs too
        return up + 1

    @rs.Asset(deps=[rs.AssetDef.dep("up")])
    def after() -> int:
        return 0

    repo = make_repo([up, down, after])
    repo.materialize()
    assert repo.load_node("down") == 3
