"""Every error of API.md §3 with its key phrase, and the moment it surfaces.

The constructor only checks resource values; everything else surfaces on the first
validate / materialize / get_job / load_node / io_handler_for_output / assets call, before
any step runs (each test proves no step ran with a counter).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel

import rivers as rs
from tests.unit.conftest import make_repo

FIRST_USES: dict[str, Callable[[rs.CodeRepository], Any]] = {
    "validate": lambda repo: repo.validate(),
    "materialize": lambda repo: repo.materialize(),
    "get_job": lambda repo: repo.get_job("j"),
    "load_node": lambda repo: repo.load_node("ran"),
    "io_handler_for_output": lambda repo: repo.io_handler_for_output("ran"),
    "assets": lambda repo: repo.assets,
}


def counting_asset(calls: list[str]) -> rs.SingleAsset:
    @rs.Asset
    def ran() -> int:
        calls.append("ran")
        return 1

    return ran


@pytest.mark.parametrize("use", list(FIRST_USES))
def test_unresolved_input_is_lazy_and_raised_before_any_step(use: str) -> None:
    calls: list[str] = []

    @rs.Asset
    def broken(missing: int) -> int:
        calls.append("broken")
        return missing

    ran = counting_asset(calls)
    repo = make_repo([ran, broken], jobs=[rs.Job("j", [ran])])  # constructor: fine
    with pytest.raises(rs.GraphValidationError, match="unresolved input 'missing'"):
        FIRST_USES[use](repo)
    assert calls == []


def test_validate_returns_none_on_a_good_repository() -> None:
    calls: list[str] = []
    assert make_repo([counting_asset(calls)]).validate() is None
    assert calls == []


def test_job_execute_is_a_first_use_too() -> None:
    calls: list[str] = []

    @rs.Asset
    def broken(nothing: int) -> int:
        return nothing

    ran = counting_asset(calls)
    repo = make_repo([ran, broken], jobs=[rs.Job("j", [ran])])
    with pytest.raises(rs.GraphValidationError, match="unresolved input 'nothing'"):
        repo.get_job("j").execute()
    assert calls == []


def test_dep_on_missing_asset_is_unresolved_input() -> None:
    @rs.Asset(deps=[rs.AssetDef.dep("ghost")])
    def needs_ghost() -> int:
        return 1

    with pytest.raises(rs.GraphValidationError, match="unresolved input 'ghost'"):
        make_repo([needs_ghost]).validate()


def test_cycle_is_named() -> None:
    calls: list[str] = []

    @rs.Asset
    def a(c: int) -> int:
        calls.append("a")
        return c

    @rs.Asset
    def b(a: int) -> int:
        return a

    @rs.Asset
    def c(b: int) -> int:
        return b

    repo = make_repo([counting_asset(calls), a, b, c])
    with pytest.raises(rs.GraphValidationError, match="Cycle") as info:
        repo.materialize()
    message = str(info.value)
    for name in ("a", "b", "c"):
        assert f"{name} ->" in message or f"-> {name}" in message
    assert "ran" not in message
    assert calls == []


def test_cycle_through_ordering_dep_is_named() -> None:
    @rs.Asset(deps=[rs.AssetDef.dep("y")])
    def x() -> int:
        return 1

    @rs.Asset
    def y(x: int) -> int:
        return x

    with pytest.raises(rs.GraphValidationError, match=r"Cycle.*(x -> y|y -> x)"):
        make_repo([x, y]).validate()


def test_unknown_selection_is_asset_not_found_before_any_step() -> None:
    calls: list[str] = []
    repo = make_repo([counting_asset(calls)])
    with pytest.raises(rs.AssetNotFoundError, match="'nope'"):
        repo.materialize(["ran", "nope"])
    assert calls == []


def test_job_with_missing_upstream_names_both_and_suggests_allow_incomplete_deps() -> None:
    calls: list[str] = []

    @rs.Asset
    def down(ran: int) -> int:
        calls.append("down")
        return ran

    repo = make_repo([counting_asset(calls), down], jobs=[rs.Job("j", [down])])
    with pytest.raises(rs.GraphValidationError) as info:
        repo.get_job("j")
    message = str(info.value)
    assert "'down'" in message and "'ran'" in message and "allow_incomplete_deps=True" in message
    assert calls == []


def test_allow_incomplete_deps_without_io_handler_is_refused_before_any_step() -> None:
    calls: list[str] = []

    @rs.Asset
    def down(ran: int) -> int:
        calls.append("down")
        return ran

    repo = make_repo([counting_asset(calls), down], jobs=[rs.Job("j", [down], allow_incomplete_deps=True)])
    with pytest.raises(rs.GraphValidationError, match="depends on 'ran' which is not in the job and has no io_handler"):
        repo.get_job("j")  # at resolution, as rivers 0.6
    assert calls == []


def test_selection_that_must_load_from_in_memory_is_refused() -> None:
    calls: list[str] = []

    @rs.Asset
    def down(ran: int) -> int:
        calls.append("down")
        return ran

    repo = make_repo([counting_asset(calls), down])
    with pytest.raises(rs.GraphValidationError, match="has no io_handler"):
        repo.materialize(["down"])
    assert calls == []


def test_allow_incomplete_deps_with_explicit_handler_loads_the_upstream(tmp_path: Any) -> None:
    from obstore.store import LocalStore

    handler = rs.PickleIOHandler(LocalStore(str(tmp_path)))

    @rs.Asset(io_handler=handler)
    def up() -> int:
        return 20

    @rs.Asset
    def down(up: int) -> int:
        return up + 1

    repo = make_repo([up, down], jobs=[rs.Job("j", [down], allow_incomplete_deps=True)])
    repo.materialize(["up"])
    result = repo.get_job("j").execute()
    assert result.materialized_assets == ["down"]
    assert repo.load_node("down") == 21


def test_duplicate_job_name() -> None:
    calls: list[str] = []
    ran = counting_asset(calls)
    repo = make_repo([ran], jobs=[rs.Job("same", [ran]), rs.Job("same", [ran])])
    with pytest.raises(rs.GraphValidationError, match="Duplicate job name: 'same'"):
        repo.materialize()
    assert calls == []


def test_job_with_a_non_definition_is_rejected_by_its_constructor() -> None:
    with pytest.raises(rs.GraphValidationError, match="Job assets must be Asset, Task, or BashTask"):
        rs.Job("j", [42])


def test_job_not_from_get_job_has_not_been_validated() -> None:
    calls: list[str] = []
    ran = counting_asset(calls)
    job = rs.Job("j", [ran])
    make_repo([ran], jobs=[job])
    with pytest.raises(rs.ExecutionError, match="has not been validated"):
        job.execute()
    assert calls == []


def test_job_naming_a_missing_node() -> None:
    calls: list[str] = []

    @rs.Asset
    def elsewhere() -> int:
        return 1

    repo = make_repo([counting_asset(calls)], jobs=[rs.Job("j", [elsewhere])])
    with pytest.raises(rs.NodeNotFoundError, match="'elsewhere' not found"):
        repo.validate()
    assert calls == []


def test_get_job_load_node_io_handler_for_output_of_unknown_names() -> None:
    repo = make_repo([counting_asset([])])
    with pytest.raises(rs.NodeNotFoundError):
        repo.get_job("nope")
    with pytest.raises(rs.NodeNotFoundError):
        repo.load_node("nope")
    with pytest.raises(rs.NodeNotFoundError):
        repo.io_handler_for_output("nope")


def test_load_node_never_written_in_memory_is_key_error() -> None:
    repo = make_repo([counting_asset([])])
    with pytest.raises(KeyError):
        repo.load_node("ran")


def test_duplicate_asset_names_are_rejected_lazily() -> None:
    def f() -> int:
        return 1

    repo = make_repo([rs.Asset(f), rs.Asset(f)])
    with pytest.raises(rs.GraphValidationError, match="'f'"):
        repo.validate()
    with pytest.raises(rs.AssetDefinitionError,  # what rivers 0.6.2 raises, in its words
                       match=r"^duplicate asset name 'f': two definitions register under it$"):
        repo.validate()


def test_one_definition_listed_twice_counts_once_as_in_rivers() -> None:
    asset = rs.Asset(lambda: 1, name="once")
    result = make_repo([asset, asset]).materialize()
    assert result.materialized_assets == ["once"]


def test_multi_output_clashing_with_an_asset_is_rejected() -> None:
    @rs.Asset
    def a() -> int:
        return 1

    @rs.Asset.from_multi(output_defs=[rs.AssetDef("a"), rs.AssetDef("b")])
    def m() -> dict[str, int]:
        return {"a": 1, "b": 2}

    with pytest.raises(rs.GraphValidationError, match="'a'"):
        make_repo([a, m]).validate()


# -- resource values: checked by the constructor -----------------------------------------------
class Plain(BaseModel):
    value: int = 3


@pytest.mark.parametrize(
    ("value", "type_name"), [(42, "int"), ("text", "str"), ({"a": 1}, "dict"), (object(), "object")]
)
def test_resource_values_are_checked_by_the_constructor(value: Any, type_name: str) -> None:
    with pytest.raises(rs.ConfigurationError, match=f"got {type_name}$"):
        make_repo([counting_asset([])], resources={"r": value})


def test_resource_values_may_be_models_or_model_classes() -> None:
    seen: list[Any] = []

    @rs.Asset
    def uses(plain: Plain, settings: rs.Resource) -> int:
        seen.extend([plain, settings])
        return plain.value

    repo = make_repo([uses], resources={"plain": Plain, "settings": rs.Resource()})
    repo.materialize()
    assert isinstance(seen[0], Plain) and seen[0].value == 3
    assert isinstance(seen[1], rs.Resource)


def test_resource_key_shadowing_an_asset_warns_at_resolution() -> None:
    @rs.Asset
    def shadowed() -> int:
        return 1

    repo = make_repo([shadowed], resources={"shadowed": Plain()})  # no warning yet: resolution is lazy
    with pytest.warns(UserWarning, match="Resource key 'shadowed' shadows an asset"):
        assets = repo.assets
    assert list(assets) == ["shadowed"]


def test_resource_keys_are_not_assets() -> None:
    repo = make_repo([counting_asset([])], resources={"res": Plain()})
    assert "res" not in repo.assets


def test_unknown_executor_metadata() -> None:
    @rs.Asset(metadata={"rivers/executor": "gpu-farm"})
    def odd() -> int:
        return 1

    repo = make_repo([odd])
    with pytest.raises(rs.ConfigurationError, match="Unknown executor in rivers/executor metadata: 'gpu-farm'"):
        repo.materialize()


def test_unknown_named_retry_policy_is_a_configuration_error_at_resolve() -> None:
    @rs.Asset(retry="nope")
    def r() -> int:
        return 1

    with pytest.raises(rs.ConfigurationError, match="'nope'"):
        make_repo([r], retries={"other": rs.RetryPolicy()}).validate()


@pytest.mark.parametrize("use", list(FIRST_USES))
def test_cycle_and_bad_job_surface_at_every_first_use(use: str) -> None:
    calls: list[str] = []

    @rs.Asset
    def p(q: int) -> int:
        calls.append("p")
        return q

    @rs.Asset
    def q(p: int) -> int:
        calls.append("q")
        return p

    ran = counting_asset(calls)
    with pytest.raises(rs.GraphValidationError, match=r"Cycle.*(p -> q|q -> p)"):
        FIRST_USES[use](make_repo([ran, p, q], jobs=[rs.Job("j", [ran])]))

    @rs.Asset
    def down(ran: int) -> int:
        calls.append("down")
        return ran

    repo = make_repo([ran, down], jobs=[rs.Job("j", [ran]), rs.Job("partial", [down])])
    with pytest.raises(rs.GraphValidationError, match="allow_incomplete_deps=True"):
        FIRST_USES[use](repo)
    assert calls == []
