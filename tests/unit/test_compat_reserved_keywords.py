"""Keywords of unsupported rivers 0.6 features: accepted, no-ops when empty, NotImplementedError when used.

Also rivers 0.6.2's messages for an empty job and an unknown retry policy name. The expected texts were
probed on the Rust-backed rivers==0.6.2 (README, Compatibility; audit items 7, 19 and 21).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import rivers as rs
from tests.unit.conftest import make_repo


@rs.Asset
def one() -> int:
    return 1


REPO_KEYWORDS = {
    "schedules": "schedules",
    "sensors": "sensors",
    "partition_defs": "partitions",
    "run_queue": "run queues",
    "run_backend": "run backends",
    "pool_limits": "concurrency pools",
}


def _not_implemented(call: Callable[[], Any], keyword: str, feature: str) -> None:
    with pytest.raises(NotImplementedError) as info:
        call()
    message = str(info.value)
    assert f"{keyword}=" in message and f"{feature} are not supported" in message
    assert "\n" not in message


# -- CodeRepository(...) --------------------------------------------------------------------------
@pytest.mark.parametrize("keyword", sorted(REPO_KEYWORDS))
@pytest.mark.parametrize("empty", [None, [], {}])
def test_repository_keywords_accept_their_empty_value(keyword: str, empty: Any) -> None:
    repo = make_repo([one], **{keyword: empty})
    assert repo.materialize().materialized_assets == ["one"]


def test_repository_takes_all_of_them_at_once() -> None:
    repo = rs.CodeRepository(
        [one], schedules=[], sensors=[], partition_defs={}, run_queue=None, run_backend=None, pool_limits={},
    )
    repo.validate()


@pytest.mark.parametrize("keyword", sorted(REPO_KEYWORDS))
def test_repository_keywords_refuse_a_real_value(keyword: str) -> None:
    value: Any = {"p": 1} if keyword in ("partition_defs", "pool_limits") else [object()]
    if keyword in ("run_queue", "run_backend"):
        value = object()
    _not_implemented(lambda: rs.CodeRepository([one], **{keyword: value}), keyword, REPO_KEYWORDS[keyword])


def test_repository_positional_order_is_api_md_s() -> None:
    # the new keywords are keyword-only: the 8th positional argument is still default_io_handler
    handler = rs.InMemoryIOHandler()
    repo = rs.CodeRepository([one], None, None, rs.Executor.in_process(), None, None, None, handler)
    assert repo.io_handler_for_output("one") is handler
    with pytest.raises(TypeError):
        rs.CodeRepository([one], None, None, None, None, None, None, None, [])  # type: ignore[misc]


def test_unknown_repository_keyword_is_still_a_type_error() -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'foo'"):
        rs.CodeRepository([one], foo=1)  # type: ignore[call-arg]


# -- runs: partition_key ------------------------------------------------------------------------------
def test_materialize_load_node_execute_accept_partition_key_none() -> None:
    repo = make_repo([one], jobs=[rs.Job("j", [one])])
    assert repo.materialize(partition_key=None).success
    assert repo.load_node("one", partition_key=None) == 1
    assert repo.load_node("one", type_hint=int, partition_key=None) == 1
    assert repo.get_job("j").execute(partition_key=None).success


def test_partition_key_refused_when_used() -> None:
    repo = make_repo([one], jobs=[rs.Job("j", [one])])
    _not_implemented(lambda: repo.materialize(partition_key="2024-01-01"), "partition_key", "partitions")
    repo.materialize()
    _not_implemented(lambda: repo.load_node("one", partition_key="2024-01-01"), "partition_key", "partitions")
    job = repo.get_job("j")
    _not_implemented(lambda: job.execute(partition_key="2024-01-01"), "partition_key", "partitions")
    _not_implemented(lambda: repo.submit(partition_key="2024-01-01"), "partition_key", "partitions")


def test_partition_key_is_refused_before_anything_runs() -> None:
    ran: list[str] = []

    @rs.Asset
    def side_effect() -> int:
        ran.append("x")
        return 1

    with pytest.raises(NotImplementedError):
        make_repo([side_effect]).materialize(partition_key="k")
    assert ran == []


def test_run_positional_order_is_api_md_s() -> None:
    repo = make_repo([one], jobs=[rs.Job("j", [one])])
    # materialize(selection, tags, raise_on_error, ...) and execute(tags, config, raise_on_error)
    assert repo.materialize(["one"], None, False).success
    assert repo.get_job("j").execute(None, None, False).success


def test_resolve_storage() -> None:
    repo = make_repo([one])
    repo.resolve(storage=None)
    _not_implemented(lambda: repo.resolve(storage=object()), "storage", "storage backends")


# -- definitions -------------------------------------------------------------------------------------
def test_bash_task_partition_mapping() -> None:
    task = rs.BashTask("b", "echo hi", partition_mapping=None)
    assert task.name == "b" and task() == "hi"
    _not_implemented(lambda: rs.BashTask("b", "echo", partition_mapping=object()), "partition_mapping", "partitions")


def test_task_partition_keywords() -> None:
    assert rs.Task(partition_mapping=None)(lambda: 1).name == "<lambda>"
    assert rs.Task(partitions_def=None)(lambda: 1).name == "<lambda>"
    # a real partition mapping used to be dropped silently
    _not_implemented(lambda: rs.Task(partition_mapping=object())(lambda: 1), "partition_mapping", "partitions")
    _not_implemented(lambda: rs.Task(partitions_def="daily")(lambda: 1), "partitions_def", "partitions")


def test_asset_def_partition_mapping() -> None:
    assert rs.AssetDef("x", partition_mapping=None).name == "x"
    _not_implemented(lambda: rs.AssetDef("x", partition_mapping=object()), "partition_mapping", "partitions")


@pytest.mark.parametrize("keyword, feature", [
    ("partitions_def", "partitions"),
    ("automation_condition", "automation conditions"),
    ("backfill_strategy", "backfills"),
    ("pool", "concurrency pools"),
    ("pool_slots", "concurrency pools"),
])
def test_asset_reserved_keywords_name_their_feature(keyword: str, feature: str) -> None:
    assert rs.Asset(**{keyword: None})(lambda: 1).name == "<lambda>"
    _not_implemented(lambda: rs.Asset(**{keyword: "x"})(lambda: 1), keyword, feature)


def test_context_partition() -> None:
    assert rs.AssetExecutionContext("a", partition=None).has_partition_key is False
    _not_implemented(lambda: rs.AssetExecutionContext("a", partition="k"), "partition", "partitions")
    _not_implemented(lambda: rs.TaskExecutionContext("t", partition="k"), "partition", "partitions")


# -- Job("j", []) ------------------------------------------------------------------------------------
@pytest.mark.parametrize("empty", [[], ()])
def test_empty_job_is_a_graph_validation_error(empty: Any) -> None:
    with pytest.raises(rs.GraphValidationError) as info:
        rs.Job("j", empty)
    assert str(info.value) == "Job 'j' got an empty asset list: name at least one asset or task"


# -- unknown retry policy names ---------------------------------------------------------------------------
POLICIES = {"p1": rs.RetryPolicy(max_retries=1), "b": rs.RetryPolicy(max_retries=2)}


@rs.Asset(retry="nope")
def e() -> int:
    return 1


@rs.Task(retry="nope")
def tk() -> int:
    return 1


@pytest.mark.parametrize("build, expected", [
    (lambda: make_repo([e]).materialize(),
     "unknown retry policy 'nope' referenced by asset 'e'; registered: []"),
    (lambda: make_repo([e], retries=POLICIES).validate(),
     """unknown retry policy 'nope' referenced by asset 'e'; registered: ["p1", "b"]"""),
    (lambda: make_repo([], tasks=[tk]).materialize(),
     "unknown retry policy 'nope' referenced by task 'tk'; registered: []"),
    (lambda: make_repo([], tasks=[rs.BashTask("bb", "echo", retry="nope")]).materialize(),
     "unknown retry policy 'nope' referenced by task 'bb'; registered: []"),
    (lambda: make_repo([rs.Asset.from_multi(name="m", output_defs=[rs.AssetDef("x")], retry="nope")(
        lambda: {"x": 1})]).materialize(),
     "unknown retry policy 'nope' referenced by asset 'm'; registered: []"),
    (lambda: make_repo([one], retries=POLICIES, default_retry_policy="zz").validate(),
     """unknown retry policy 'zz' in default_retry_policy; registered: ["p1", "b"]"""),
    (lambda: make_repo([one], jobs=[rs.Job("j", [one], retry="nope")]).validate(),
     "unknown retry policy 'nope' referenced by job 'j'; registered: []"),
    (lambda: make_repo([one], retries=POLICIES).materialize(retry="nope"),
     """unknown retry policy 'nope' referenced by job '<materialize>'; registered: ["p1", "b"]"""),
])
def test_unknown_retry_policy_message_is_rivers_0_6_2_s(build: Callable[[], Any], expected: str) -> None:
    with pytest.raises(rs.ConfigurationError) as info:
        build()
    assert str(info.value) == expected


def test_graph_retry_inherited_by_its_tasks_is_reported_on_the_graph() -> None:
    @rs.Task
    def inner() -> int:
        return 1

    @rs.Asset.from_graph(name="g", retry="nope")
    def g() -> Any:
        return inner()

    with pytest.raises(rs.ConfigurationError, match=r"^unknown retry policy 'nope' referenced by asset 'g'; "):
        make_repo([g]).validate()
