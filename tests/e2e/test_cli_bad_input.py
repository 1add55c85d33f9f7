"""`rivers submit` / `rivers runs` given bad input: one line naming the problem, exit code 2, no traceback,
and nothing recorded in Redis."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest
import redis

from tests.e2e.test_cli import PIPELINE, ROOT, command, one_line_error
from tests.redis_server import RedisServer

pytestmark = pytest.mark.slow


def rivers(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIVERS_")}
    env["RIVERS_REDIS_URL"] = url
    return subprocess.run([*command("rivers"), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.mark.parametrize(
    ("args", "phrases"),
    [
        (["--select", "nosuch"], ["Asset 'nosuch' not found", "numbers", "total"]),
        (["--select", "numbers,doubld"], ["Asset 'doubld' not found", "did you mean 'doubled'?"]),
        (["--job", "nosuch"], ["Job 'nosuch' not found", "numbers_only"]),
        (["--job", "number_only"], ["Job 'number_only' not found", "did you mean 'numbers_only'?"]),
    ],
)
def test_submit_of_unknown_names_exits_2_before_recording_anything(
    redis_url: str, args: list[str], phrases: list[str]
) -> None:
    result = rivers("submit", PIPELINE, *args, url=redis_url)
    assert result.returncode == 2, result.stderr
    line = one_line_error(result)
    for phrase in phrases:
        assert phrase in line, line
    assert result.stdout == ""
    client = redis.Redis.from_url(redis_url)
    assert client.dbsize() == 0
    client.close()


def test_submit_of_select_and_job_together_is_a_usage_error(redis_url: str) -> None:
    result = rivers("submit", PIPELINE, "--select", "numbers", "--job", "numbers_only", url=redis_url)
    assert result.returncode == 2
    assert "not allowed with" in result.stderr


@pytest.mark.parametrize(
    ("path", "shown"),
    [("/abc", "database 'abc' is not a number"), ("/0?db=x", "database 'x' is not a number")],
)
def test_a_non_numeric_database_is_refused(redis_server: RedisServer, path: str, shown: str) -> None:
    url = f"redis://:s3cret@127.0.0.1:{redis_server.port}{path}"
    for args in (["runs"], ["submit", PIPELINE]):
        result = rivers(*args, url=url)
        assert result.returncode == 2, result.stderr
        line = one_line_error(result)
        assert f"Redis URL redis://:***@127.0.0.1:{redis_server.port}" in line and shown in line, line
        assert "s3cret" not in result.stderr


@pytest.fixture(scope="module")
def secured() -> Iterator[RedisServer]:
    with RedisServer(password="pw") as server:
        yield server


def test_a_redis_requiring_a_password_the_url_lacks(secured: RedisServer) -> None:
    url = f"redis://127.0.0.1:{secured.port}/0"
    result = rivers("runs", url=url)
    assert result.returncode == 2
    assert one_line_error(result) == (f"rivers: error: Redis at {url} requires a password and the URL gives none "
                                      "(redis://:PASSWORD@host:port/db)")


def test_a_redis_refusing_the_urls_password(secured: RedisServer) -> None:
    result = rivers("submit", PIPELINE, url=f"redis://:nope@127.0.0.1:{secured.port}/0")
    assert result.returncode == 2
    line = one_line_error(result)
    assert f"Redis at redis://:***@127.0.0.1:{secured.port}/0 refused the credentials in the URL" in line
    assert "nope" not in result.stderr
    assert secured.client().dbsize() == 0
