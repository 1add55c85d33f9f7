"""StepSpec: a StepCall survives JSON and runs to the same result (rivers/spec.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from obstore.store import LocalStore
from pydantic import SecretStr

import rivers as rs
from rivers.exceptions import SpecError
from rivers.resolve import Param, Resolver
from rivers.results import StepResult
from rivers.runtime import StepCall, run_step
from rivers.spec import (
    ObjectSpec,
    Pickled,
    Ref,
    StepSpec,
    UnreadableSpec,
    call_from_spec,
    read_spec,
    rebuild,
    spec_from_call,
)
from tests.pipelines import parallel_spec as ps


def make_call(definitions: list[Any], name: str, handler: rs.BaseIOHandler, resources: dict[str, Any],
              config: dict[str, Any] | None = None) -> StepCall:
    graph = Resolver(definitions, resources, handler, True, {}).resolve()
    node = graph.nodes[name]
    return StepCall(
        run_id="run-1", step_key=name, attempt=1, definition=node.definition, params=node.params,
        outputs=list(node.outputs.values()), resources=resources, context_type=node.context_type,
        config_type=node.config_type, config=config, return_hint=node.return_hint,
    )


def through_json(call: StepCall) -> StepCall:
    return call_from_spec(StepSpec.model_validate_json(spec_from_call(call, "parallel").model_dump_json()))


def comparable(result: StepResult) -> dict[str, Any]:
    outputs = [(o.name, o.status, o.data_version, {k: v for k, v in o.metadata.items() if "duration" not in k})
               for o in result.outputs]
    logs = [(entry.logger, entry.message) for entry in result.logs]
    return {"status": result.status, "outputs": outputs, "logs": logs}


@pytest.fixture
def handler(tmp_path: Path) -> rs.PickleIOHandler:
    return rs.PickleIOHandler(LocalStore(str(tmp_path)))


def test_round_trip_runs_to_the_same_result(handler: rs.PickleIOHandler) -> None:
    resources = {"offset": ps.Offset(value=3, token=SecretStr("ab"))}
    definitions = [ps.base, ps.scaled]
    assert run_step(make_call(definitions, "base", handler, resources)).status == "succeeded"
    call = make_call(definitions, "scaled", handler, resources, config={"factor": 10})
    rebuilt = through_json(call)

    assert rebuilt.definition is ps.scaled
    assert [(p.name, p.kind, p.source, p.type_hint, p.metadata) for p in rebuilt.params] == [
        (p.name, p.kind, p.source, p.type_hint, p.metadata) for p in call.params
    ]
    assert rebuilt.return_hint is int and rebuilt.config_type is ps.SpecConfig
    assert rebuilt.context_type is rs.AssetExecutionContext
    assert rebuilt.resources["offset"] is not resources["offset"]
    assert rebuilt.resources["offset"].token.get_secret_value() == "ab"  # secrets are not masked

    live = run_step(call)
    assert live.status == "succeeded" and handler.load_input(rs.InputContext("scaled")) == 55
    remote = run_step(rebuilt)  # the previous value (55) now arrives through `self`
    assert handler.load_input(rs.InputContext("scaled")) == 110
    assert comparable(remote) == comparable(live)


def test_task_context_stays_a_task_context(handler: rs.PickleIOHandler) -> None:
    definitions = [ps.base, ps.a_task]
    run_step(make_call(definitions, "base", handler, {}))
    assert run_step(through_json(make_call(definitions, "a_task", handler, {}))).status == "succeeded"
    assert handler.load_input(rs.InputContext("a_task")) == "TaskExecutionContext:5"


def test_closures_travel_signed(handler: rs.PickleIOHandler) -> None:
    factor = 7

    @rs.Asset
    def local() -> int:
        return factor * 6

    call = make_call([local], "local", handler, {})
    spec = spec_from_call(call, "parallel")
    assert isinstance(spec.definition, Pickled)
    assert run_step(through_json(call)).status == "succeeded"
    assert handler.load_input(rs.InputContext("local")) == 42


def test_a_tampered_pickle_is_refused(handler: rs.PickleIOHandler) -> None:
    @rs.Asset
    def local() -> int:
        return 1

    spec = spec_from_call(make_call([local], "local", handler, {}), "parallel")
    assert isinstance(spec.definition, Pickled)
    forged = spec.model_copy(update={"definition": Pickled(data=spec.definition.data, signature="0" * 64)})
    with pytest.raises(SpecError, match=r"'local'.*signature"):
        call_from_spec(forged)


def test_references_must_name_what_the_spec_says(handler: rs.PickleIOHandler) -> None:
    spec = spec_from_call(make_call([ps.base], "base", handler, {}), "parallel")
    assert spec.definition == Ref(module=ps.__name__, qualname="base")
    with pytest.raises(SpecError, match="step 'base': os:system is not a rivers Asset or Task"):
        call_from_spec(spec.model_copy(update={"definition": Ref(module="os", qualname="system")}))
    not_a_handler = ObjectSpec(ref=Ref(module=ps.__name__, qualname="SpecConfig"), config_json="{}")
    with pytest.raises(SpecError, match="is not an IO handler"):
        call_from_spec(spec.model_copy(update={"handlers": [not_a_handler]}))


def test_unserialisable_handler_names_the_step(tmp_path: Path) -> None:
    class Opaque(rs.BaseIOHandler):
        thing: Any = None

        def handle_output(self, context: Any, obj: Any) -> None: ...

        def load_input(self, context: Any) -> Any: ...

    call = make_call([ps.base], "base", Opaque(thing=object()), {})
    with pytest.raises(SpecError, match="step 'base': Opaque cannot be sent to a worker as JSON"):
        spec_from_call(call, "parallel")


def test_rebuilt_objects_are_cached_by_class_and_configuration() -> None:
    first = ObjectSpec(ref=Ref(module=ps.__name__, qualname="Offset"), config_json='{"value": 1, "token": ""}')
    again = ObjectSpec(ref=Ref(module=ps.__name__, qualname="Offset"), config_json='{"value": 1, "token": ""}')
    other = ObjectSpec(ref=Ref(module=ps.__name__, qualname="Offset"), config_json='{"value": 2, "token": ""}')
    made = rebuild(first, "s", rs.Resource, "a resource")
    assert rebuild(again, "t", rs.Resource, "a resource") is made
    assert rebuild(other, "s", rs.Resource, "a resource").value == 2
    with pytest.raises(SpecError, match="Offset is not an IO handler"):
        rebuild(again, "s", rs.BaseIOHandler, "an IO handler")


def test_retry_policy_and_constants_travel(handler: rs.PickleIOHandler) -> None:
    call = make_call([ps.base], "base", handler, {})
    call.retry = rs.RetryPolicy(2, backoff=rs.Backoff.constant(1.5), retry_on=[ValueError])
    call.params = [Param("pair", "const", value=(1, 2)), Param("word", "const", value="s"),
                   Param("values", "collect", value=["a__0", "a__1"], iterate=True)]
    rebuilt = through_json(call)
    assert rebuilt.retry is not None and rebuilt.retry.max_retries == 2 and rebuilt.retry.delay(1) == 1.5
    assert rebuilt.retry.retries(UnicodeError) and not rebuilt.retry.retries(KeyError)
    call.retry = rs.RetryPolicy(1, retry_on=[rs.FailureReason.TIMEOUT, KeyError])
    rebuilt = through_json(call)
    assert rebuilt.retry is not None and rebuilt.retry.retry_on == (rs.FailureReason.TIMEOUT, KeyError)
    sent = json.loads(spec_from_call(call, "parallel").model_dump_json())
    sent["retry"]["retry_on"][0] = "soon"  # no such FailureReason: the field is named, nothing is guessed
    with pytest.raises(UnreadableSpec, match=r"cannot read field 'retry\.retry_on' "):
        read_spec(json.dumps(sent))
    assert [(p.kind, p.value, p.iterate) for p in rebuilt.params] == [
        ("const", (1, 2), False), ("const", "s", False), ("collect", ["a__0", "a__1"], True),
    ]
