"""Issue 12, "Secrets out of specs": a pipeline whose resource and IO handler have secret fields runs through
a real rivers-worker, and then no key or value anywhere in Redis contains a secret's text.

The worker gets its secrets from its own environment (the default), or opens them with RIVERS_SECRET when the
coordinator opted in to RIVERS_SECRETS_IN_SPECS=encrypted; a worker that has neither fails the step, naming the
resource, the field and the variable to set.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from rivers.distributed.jobs import job_payload
from tests.conftest import WorkerProcesses
from tests.pipelines import secrets_pipeline as sp

pytestmark = pytest.mark.slow


class Secrets:
    """Distinctive secret texts for one test, and the worker environment that provides them."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:12]
        self.password = f"pw-{tag}-hunter2"
        self.pin = f"pin-{tag}".encode()
        self.api_key = f"api-{tag}-key"
        self.token = f"tok-{tag}-handler"

    @property
    def texts(self) -> list[bytes]:
        return [self.password.encode(), self.pin, self.api_key.encode(), self.token.encode()]

    def worker_env(self) -> dict[str, str]:
        return {"RIVERS_SECRET_VAULT__PASSWORD": self.password, "RIVERS_SECRET_VAULT__PIN": self.pin.decode(),
                "SECRETS_TEST_API_KEY": self.api_key, "RIVERS_SECRET_TOKENHANDLER__TOKEN": self.token}

    def repo(self, directory: Path):  # type: ignore[no-untyped-def]
        return sp.make_repo(directory, self.password, self.pin, self.api_key, self.token)

    def check_digests(self, repo, result) -> None:  # type: ignore[no-untyped-def]
        assert repo.load_node("uses_secret") == {
            "password": sp.digest(self.password), "pin": sp.digest(self.pin), "api_key": sp.digest(self.api_key)}
        [output] = result.step_results["uses_secret"].outputs
        assert output.metadata["token_sha256"].raw_value() == sp.digest(self.token)


def _variants(value: bytes, depth: int = 0) -> Iterator[bytes]:
    """A Redis value and what it may encode: zlib (job `data`), base64 of zlib (RQ's `exc_string`)."""
    yield value
    if depth >= 3:
        return
    try:
        yield from _variants(zlib.decompress(value), depth + 1)
    except zlib.error:
        pass
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return
    if decoded and decoded != value:
        yield from _variants(decoded, depth + 1)


def _redis_contents(url: str) -> Iterator[tuple[bytes, bytes | None, bytes]]:
    """(key, hash field or None, one value) for every key of every database, of every type."""
    first = redis.Redis.from_url(url)
    databases = [int(name[2:]) for name in first.info("keyspace")]
    first.close()
    for db in databases:
        client = redis.Redis.from_url(url, db=db)
        for key in client.scan_iter(count=1000):
            kind = client.type(key).decode()
            yield key, None, key
            if kind == "string":
                yield key, None, client.get(key) or b""
            elif kind == "hash":
                for field, value in client.hgetall(key).items():
                    yield key, None, field
                    yield key, field, value
            elif kind == "list":
                for value in client.lrange(key, 0, -1):
                    yield key, None, value
            elif kind == "set":
                for value in client.smembers(key):
                    yield key, None, value
            elif kind == "zset":
                for value, score in client.zrange(key, 0, -1, withscores=True):
                    yield key, None, value
                    yield key, None, str(score).encode()
            elif kind == "stream":
                for entry_id, fields in client.xrange(key):
                    yield key, None, entry_id
                    for field, value in fields.items():
                        yield key, None, field
                        yield key, None, value
            else:
                raise AssertionError(f"Redis key {key!r} of a type this scan does not read: {kind}")
        client.close()


def assert_not_in_redis(url: str, texts: list[bytes]) -> list[dict]:
    """Scan all of Redis for `texts`; return the step specs of the jobs (to show that they were scanned)."""
    specs = []
    for key, field, value in _redis_contents(url):
        for variant in _variants(value):
            for text in texts:
                assert text not in variant, f"a secret's text is in Redis, under {key!r}"
        if key.startswith(b"rq:job:") and field == b"data":  # [function, null, [spec, reply_to], {}], maybe zlib
            _function, _instance, (spec_json, _reply_to), _kwargs = json.loads(job_payload(value, len(value) * 1000)
                                                                                or b"")
            specs.append(json.loads(spec_json))
    assert specs, "no job's data was found in Redis"
    return specs


def test_secrets_resolved_from_the_worker_environment_never_reach_redis(
    redis_url: str, workers: WorkerProcesses, tmp_path: Path
) -> None:
    secrets = Secrets()
    workers.start(redis_url, env=secrets.worker_env())
    repo = secrets.repo(tmp_path)
    result = repo.materialize()
    assert result.success, result.failed_assets
    secrets.check_digests(repo, result)

    specs = assert_not_in_redis(redis_url, secrets.texts)
    [spec] = [s for s in specs if s["step_key"] == "uses_secret"]  # the spec travelled, and was scanned
    vault = spec["resources"]["vault"]
    assert json.loads(vault["config_json"]) == {"password": None, "pin": None, "creds": {"api_key": None}}
    assert [(s["path"], s["env"], s["key"]) for s in vault["secrets"]] == [
        (["password"], "RIVERS_SECRET_VAULT__PASSWORD", "process"),
        (["pin"], "RIVERS_SECRET_VAULT__PIN", "process"),
        (["creds", "api_key"], "SECRETS_TEST_API_KEY", "process"),
    ]
    [handler] = spec["handlers"]
    assert [(s["path"], s["env"]) for s in handler["secrets"]] == [(["token"], "RIVERS_SECRET_TOKENHANDLER__TOKEN")]


def test_encrypted_secrets_open_with_rivers_secret_and_never_reach_redis_in_clear(
    redis_url: str, workers: WorkerProcesses, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = Secrets()
    monkeypatch.setenv("RIVERS_SECRET", "deployment-key-of-the-test")
    monkeypatch.setenv("RIVERS_SECRETS_IN_SPECS", "encrypted")
    workers.start(redis_url, env={"RIVERS_SECRET": "deployment-key-of-the-test"})  # no variable per secret
    repo = secrets.repo(tmp_path)
    result = repo.materialize()
    assert result.success, result.failed_assets
    secrets.check_digests(repo, result)

    specs = assert_not_in_redis(redis_url, secrets.texts)
    [spec] = [s for s in specs if s["step_key"] == "uses_secret"]
    assert {s["key"] for s in spec["resources"]["vault"]["secrets"]} == {"deployment"}


def test_a_worker_without_the_variable_fails_the_step_naming_resource_field_and_variable(
    redis_url: str, workers: WorkerProcesses, tmp_path: Path
) -> None:
    secrets = Secrets()
    env = secrets.worker_env()
    del env["RIVERS_SECRET_VAULT__PASSWORD"]
    workers.start(redis_url, env=env)
    repo = secrets.repo(tmp_path)
    result = repo.materialize(raise_on_error=False)
    assert not result.success
    failed = dict(result.failed_assets)
    assert failed["uses_secret"] == (
        "SpecError: step 'uses_secret': resource 'vault' (Vault): secret field 'password' is not set in this "
        "worker's environment: set RIVERS_SECRET_VAULT__PASSWORD")
    assert failed["downstream"] == "ExecutionError: Skipped: upstream dependency failed"
    assert result.step_results["uses_secret"].attempt == 1  # a configuration failure: not retried
    assert_not_in_redis(redis_url, secrets.texts)


def test_the_embedded_pool_opens_secrets_set_in_code(tmp_path: Path) -> None:
    """No Redis, no variables: the coordinator's own pool processes open what it sealed for them."""
    secrets = Secrets()
    repo = secrets.repo(tmp_path)
    result = repo.materialize()
    assert result.success, result.failed_assets
    secrets.check_digests(repo, result)
