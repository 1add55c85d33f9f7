"""Secret fields of resources and IO handlers travel as SecretSpecs, never in clear (rivers/secrets.py)."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from obstore.store import LocalStore
from pydantic import BaseModel, Field, SecretStr, field_validator

import rivers as rs
from rivers import secrets
from rivers.exceptions import ConfigurationError, SpecError
from rivers.runtime import StepCall
from rivers.spec import ObjectSpec, StepSpec, call_from_spec, object_spec, rebuild, spec_from_call
from tests.pipelines import secrets_pipeline as sp
from tests.unit.test_spec import make_call

PASSWORD, PIN, API_KEY, TOKEN = "pw-unit-hunter2", b"pin-unit-1234", "api-unit-key", "tok-unit-handler"


@pytest.fixture
def call(tmp_path: Path) -> StepCall:
    vault = sp.Vault(password=SecretStr(PASSWORD), pin=PIN, creds=sp.Creds(api_key=SecretStr(API_KEY)))
    handler = sp.TokenHandler(LocalStore(str(tmp_path)), token=SecretStr(TOKEN))
    return make_call([sp.uses_secret], "uses_secret", handler, {"vault": vault})


@contextlib.contextmanager
def elsewhere() -> Iterator[None]:
    """This process as a worker on another machine: not in the coordinator's process tree (another authkey)."""
    process = multiprocessing.current_process()
    authkey = bytes(process.authkey)
    process.authkey = os.urandom(32)
    try:
        yield
    finally:
        process.authkey = authkey


def rebuilt_elsewhere(text: str) -> StepCall:
    with elsewhere():
        return rebuilt(text)


def spec_json(call: StepCall) -> str:
    return spec_from_call(call, "parallel").model_dump_json()


def rebuilt(text: str) -> StepCall:
    return call_from_spec(StepSpec.model_validate_json(text))


def all_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"RIVERS_SECRET_VAULT__PASSWORD": PASSWORD, "RIVERS_SECRET_VAULT__PIN": PIN.decode(),
                        "SECRETS_TEST_API_KEY": API_KEY, "RIVERS_SECRET_TOKENHANDLER__TOKEN": TOKEN}.items():
        monkeypatch.setenv(name, value)


def check_secrets(call: StepCall) -> None:
    vault = call.resources["vault"]
    assert vault.password.get_secret_value() == PASSWORD and vault.pin.get_secret_value() == PIN
    assert vault.creds.api_key.get_secret_value() == API_KEY
    assert call.outputs[0].handler.token.get_secret_value() == TOKEN


def test_a_spec_holds_no_secret_only_where_each_goes_and_its_variable(call: StepCall) -> None:
    text = spec_json(call)
    for secret in (PASSWORD, PIN.decode(), API_KEY, TOKEN):
        assert secret not in text
    spec = json.loads(text)
    vault = spec["resources"]["vault"]
    assert json.loads(vault["config_json"]) == {"password": None, "pin": None, "creds": {"api_key": None}}
    assert [(s["path"], s["env"]) for s in vault["secrets"]] == [
        (["password"], "RIVERS_SECRET_VAULT__PASSWORD"),  # a resource: by its key
        (["pin"], "RIVERS_SECRET_VAULT__PIN"),
        (["creds", "api_key"], "SECRETS_TEST_API_KEY"),  # Field(json_schema_extra={"env": ...}) names its own
    ]
    [handler] = spec["handlers"]
    assert json.loads(handler["config_json"])["token"] is None
    assert [(s["path"], s["env"]) for s in handler["secrets"]] == [
        (["token"], "RIVERS_SECRET_TOKENHANDLER__TOKEN")]  # an IO handler: by its class name


def test_the_coordinators_own_pool_processes_open_them(call: StepCall) -> None:
    """Same process tree (the embedded parallel pool): secrets set in code arrive without any variable."""
    check_secrets(rebuilt(spec_json(call)))


def test_a_worker_elsewhere_resolves_them_from_its_environment(
    call: StepCall, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = spec_json(call)
    all_variables(monkeypatch)
    check_secrets(rebuilt_elsewhere(text))


def test_a_missing_variable_fails_naming_resource_field_and_variable(
    call: StepCall, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = spec_json(call)
    all_variables(monkeypatch)
    monkeypatch.delenv("SECRETS_TEST_API_KEY")
    with pytest.raises(SpecError) as info:
        rebuilt_elsewhere(text)
    assert str(info.value) == ("step 'uses_secret': resource 'vault' (Vault): secret field 'creds.api_key' is not set "
                               "in this worker's environment: set SECRETS_TEST_API_KEY")
    all_variables(monkeypatch)
    monkeypatch.delenv("RIVERS_SECRET_TOKENHANDLER__TOKEN")
    with pytest.raises(SpecError, match=r"^step 'uses_secret': IO handler TokenHandler: secret field 'token' is not "
                                        r"set in this worker's environment: set RIVERS_SECRET_TOKENHANDLER__TOKEN$"):
        rebuilt_elsewhere(text)


def test_encrypted_mode_round_trips_with_rivers_secret_alone(
    call: StepCall, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RIVERS_SECRET", "deployment-key")
    monkeypatch.setenv("RIVERS_SECRETS_IN_SPECS", "encrypted")
    text = spec_json(call)
    assert PASSWORD not in text and TOKEN not in text
    assert {s["key"] for s in json.loads(text)["resources"]["vault"]["secrets"]} == {"deployment"}
    check_secrets(rebuilt_elsewhere(text))  # another process tree, no variable per secret


def test_encrypted_mode_with_a_wrong_or_missing_rivers_secret_fails_clearly(
    call: StepCall, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RIVERS_SECRET", "deployment-key")
    monkeypatch.setenv("RIVERS_SECRETS_IN_SPECS", "encrypted")
    text = spec_json(call)
    monkeypatch.setenv("RIVERS_SECRET", "another-key")
    with pytest.raises(SpecError) as info:
        rebuilt_elsewhere(text)
    assert str(info.value) == (
        "step 'uses_secret': IO handler TokenHandler: secret field 'token' is not set in this worker's environment: "
        "set RIVERS_SECRET_TOKENHANDLER__TOKEN (the coordinator sent it encrypted, and this worker's RIVERS_SECRET "
        "does not decrypt it: or give it the coordinator's)")
    monkeypatch.delenv("RIVERS_SECRET")
    with pytest.raises(SpecError, match=r"set RIVERS_SECRET_TOKENHANDLER__TOKEN \(the coordinator sent it encrypted "
                                        r"with RIVERS_SECRET, which this worker does not have"):
        rebuilt_elsewhere(text)


def test_encrypted_mode_without_rivers_secret_is_a_configuration_error(
    call: StepCall, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RIVERS_SECRETS_IN_SPECS", "encrypted")
    with pytest.raises(ConfigurationError, match=r"^step 'uses_secret': resource 'vault' \(Vault\): "
                                                 r"RIVERS_SECRETS_IN_SPECS=encrypted needs RIVERS_SECRET") as info:
        spec_from_call(call, "parallel")
    assert isinstance(info.value, SpecError)  # so a queue fails that step with it
    monkeypatch.setenv("RIVERS_SECRETS_IN_SPECS", "plaintext")
    with pytest.raises(ConfigurationError, match="RIVERS_SECRETS_IN_SPECS='plaintext': expected one of env, encrypted"):
        spec_from_call(call, "parallel")


def test_a_sealed_value_moved_to_another_field_does_not_open(call: StepCall) -> None:
    spec = spec_from_call(call, "parallel")
    vault = spec.resources["vault"]
    password, pin, api_key = vault.secrets
    swapped = ObjectSpec(ref=vault.ref, config_json=vault.config_json,
                         secrets=(password.model_copy(update={"sealed": pin.sealed}), pin, api_key))
    with pytest.raises(SpecError, match="secret field 'password' is not set in this worker's environment"):
        rebuild(swapped, "s", rs.Resource, "a resource", key="vault")


def test_each_spec_seals_anew_and_the_worker_still_builds_one_object(call: StepCall) -> None:
    first, second = spec_from_call(call, "parallel"), spec_from_call(call, "parallel")
    assert first.resources["vault"] != second.resources["vault"]  # fresh nonces
    assert rebuilt(first.model_dump_json()).resources["vault"] is rebuilt(second.model_dump_json()).resources["vault"]


def test_an_empty_secret_travels_as_it_is(tmp_path: Path) -> None:
    vault = sp.Vault(password=SecretStr(""))
    spec = object_spec(vault, "s", key="vault")
    assert spec.secrets == () and json.loads(spec.config_json)["password"] == ""


class Picky(rs.Resource):
    password: SecretStr

    @field_validator("password")
    @classmethod
    def _strong(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 12:
            raise ValueError(f"{value.get_secret_value()} is too short")
        return value


class Fails(rs.Resource):
    password: SecretStr = Field(json_schema_extra={"env": "UNIT_FAILS_PASSWORD"})

    def setup(self) -> None:
        raise ConnectionError(f"cannot log in with {self.password.get_secret_value()}")


def test_errors_of_a_rebuilt_object_never_show_its_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    picky = object_spec(Picky.model_construct(password=SecretStr("short-pw")), "s", key="picky")
    monkeypatch.setenv("RIVERS_SECRET_PICKY__PASSWORD", "short-pw")
    with pytest.raises(SpecError) as info, elsewhere():
        rebuild(picky, "s", rs.Resource, "a resource", key="picky")
    assert "short-pw" not in str(info.value) and "is too short" in str(info.value)

    fails = object_spec(Fails(password=SecretStr("setup-secret")), "s", key="fails")
    monkeypatch.setenv("UNIT_FAILS_PASSWORD", "setup-secret")
    with pytest.raises(SpecError) as info, elsewhere():
        rebuild(fails, "s", rs.Resource, "a resource", setup=True, key="fails")
    assert str(info.value) == ("step 's': resource 'fails' (Fails) failed in setup(): ConnectionError: cannot log in "
                               "with **********")
    assert info.value.__cause__ is None  # its traceback, which a report carries, would show the secret


def test_names_of_variables() -> None:
    assert secrets.env_name("db", ("password",)) == "RIVERS_SECRET_DB__PASSWORD"
    assert secrets.env_name("my-db", ("tokens", 0)) == "RIVERS_SECRET_MY_DB__TOKENS__0"
    assert secrets.env_name("S3Handler", ("creds", "key")) == "RIVERS_SECRET_S3HANDLER__CREDS__KEY"
    assert secrets.env_name("db", ("creds", "keys", 1), ("PG_KEYS", 2)) == "PG_KEYS__1"
    assert secrets.field_label(("creds", "keys", 1)) == "creds.keys[1]"


class Nested(BaseModel):
    keys: list[SecretStr] = []
    by_name: dict[str, SecretStr] = {}


class Many(rs.Resource):
    nested: Nested = Nested()
    maybe: SecretStr | None = None


def test_secrets_in_lists_dicts_and_optionals(monkeypatch: pytest.MonkeyPatch) -> None:
    many = Many(nested=Nested(keys=[SecretStr("k0"), SecretStr("k1")], by_name={"a": SecretStr("va")}))
    spec = object_spec(many, "s", key="many")
    config: dict[str, Any] = json.loads(spec.config_json)
    assert config == {"nested": {"keys": [None, None], "by_name": {"a": None}}, "maybe": None}
    assert [s.env for s in spec.secrets] == [
        "RIVERS_SECRET_MANY__NESTED__KEYS__0", "RIVERS_SECRET_MANY__NESTED__KEYS__1",
        "RIVERS_SECRET_MANY__NESTED__BY_NAME__A"]
    for secret, value in zip(spec.secrets, ("k0", "k1", "va"), strict=True):
        monkeypatch.setenv(secret.env, value)
    with elsewhere():
        made = rebuild(spec, "s", rs.Resource, "a resource", key="many")
    assert [k.get_secret_value() for k in made.nested.keys] == ["k0", "k1"]
    assert made.nested.by_name["a"].get_secret_value() == "va" and made.maybe is None
