"""Redis URLs that redis-py would misread, and Redis refusing the URL's credentials: one sentence each."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import rivers as rs
from rivers.distributed.connection import check_reachable, connect, redacted
from tests.redis_server import RedisServer


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://host:6379/abc", "Redis URL redis://host:6379/abc: database 'abc' is not a number"),
        ("redis://host:6379/0?db=x", "Redis URL redis://host:6379/0?db=x: database 'x' is not a number"),
        ("redis://:s3cret@host:6379/abc", "Redis URL redis://:***@host:6379/abc: database 'abc' is not a number"),
        ("rediss://u:s3cret@host/-1", "Redis URL rediss://u:***@host/-1: database '-1' is not a number"),
        ("unix:///run/redis.sock?db=one", "Redis URL unix:///run/redis.sock?db=one: database 'one' is not a number"),
        ("redis://:s3cret@host:63x9/0", "Redis URL redis://:***@host:63x9/0: the port '63x9' is not a port number"),
        ("localhost:6379", "Redis URL localhost:6379: the scheme must be redis://, rediss:// or unix://"),
        ("redis://[::1/0", "Redis URL redis://[::1/0 is not a URL: Invalid IPv6 URL"),
    ],
)
def test_a_url_redis_py_would_misread_is_refused(url: str, message: str) -> None:
    with pytest.raises(rs.ConfigurationError) as info:
        connect(url)
    assert str(info.value) == message
    with pytest.raises(rs.ConfigurationError):
        check_reachable(url)


@pytest.mark.parametrize("url", ["redis://host:6379", "redis://host:6379/", "redis://host:6379/12",
                                 "redis://host/3?db=4", "rediss://:pw@host:6380/0", "unix:///run/redis.sock?db=2"])
def test_good_urls_are_accepted(url: str) -> None:
    connect(url).close()


def test_redacted_hides_passwords_in_the_netloc_and_the_query() -> None:
    assert redacted("redis://user:pw@host:1/0") == "redis://user:***@host:1/0"
    assert redacted("redis://host:1/0?password=pw&db=1") == "redis://host:1/0?password=***&db=1"
    assert redacted("redis://:pw@host:x/0") == "redis://:***@host:x/0"
    assert redacted("redis://host:1/0") == "redis://host:1/0"
    assert redacted("unix:///run/redis.sock?password=pw") == "unix:///run/redis.sock?password=***"


@pytest.fixture(scope="module")
def secured() -> Iterator[RedisServer]:
    with RedisServer(password="pw") as server:
        yield server


@pytest.mark.timeout(30)
def test_a_redis_that_requires_a_password_the_url_lacks(secured: RedisServer) -> None:
    url = f"redis://127.0.0.1:{secured.port}/0"
    with pytest.raises(rs.ExecutionError) as info:
        check_reachable(url)
    assert str(info.value).startswith(f"Redis at {url} requires a password and the URL gives none")
    assert "\n" not in str(info.value)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("auth", [":wrong@", "someone:wrong@"])
def test_a_redis_that_refuses_the_urls_password(secured: RedisServer, auth: str) -> None:
    url = f"redis://{auth}127.0.0.1:{secured.port}/0"
    with pytest.raises(rs.ExecutionError) as info:
        check_reachable(url)
    message = str(info.value)
    assert message.startswith(f"Redis at {redacted(url)} refused the credentials in the URL: "), message
    assert "wrong" not in message


def test_the_right_password_connects(secured: RedisServer) -> None:
    check_reachable(secured.url)
