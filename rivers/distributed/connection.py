"""Redis clients for rivers: retries with backoff, and a one-sentence error when Redis is unreachable."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from rivers import defaults
from rivers.exceptions import ConfigurationError, ExecutionError

if TYPE_CHECKING:
    from redis import Redis


def redis_url(url: str | None = None) -> str | None:
    """The URL given, else RIVERS_REDIS_URL, else None (embedded mode)."""
    return url or os.environ.get(defaults.REDIS_URL_ENV) or None


def redacted(url: str) -> str:
    """The URL without its password (user info or `?password=`), for messages."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            user = f"{parts.username}:***" if parts.username else ":***"
            netloc = f"{user}@{netloc.rpartition('@')[2]}"
        query = parts.query
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(name == "password" for name, _ in pairs):
            query = urlencode([(name, "***" if name == "password" else value) for name, value in pairs], safe="*")
        if (netloc, query) == (parts.netloc, parts.query):
            return url
        # not urlunsplit: it drops the empty host of unix:///path?password=...
        return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "") + (
            f"#{parts.fragment}" if parts.fragment else "")
    except ValueError:  # not even a URL: never show what may be a password
        return url.rpartition("@")[2] if "@" in url else url


def check_url(url: str) -> None:
    """Raise ConfigurationError for what redis-py would silently read as database 0 or refuse obscurely.

    A path database that is not a number (`redis://host:6379/abc`) is dropped by redis-py, which then
    uses database 0; a `?db=` that is not a number fails with a message that does not show the value.
    """
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed [IPv6 address]
        raise ConfigurationError(f"Redis URL {redacted(url)} is not a URL: {exc}") from None
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigurationError(f"Redis URL {redacted(url)}: the scheme must be redis://, rediss:// or unix://")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port lazily
    except ValueError:
        raise ConfigurationError(f"Redis URL {redacted(url)}: the port {parts.netloc.rpartition(':')[2]!r} "
                                 "is not a port number") from None
    databases = [value for name, value in parse_qsl(parts.query, keep_blank_values=True) if name == "db"]
    if parts.scheme != "unix" and parts.path.strip("/"):
        databases.append(unquote(parts.path).replace("/", ""))
    for database in databases:
        if not database.isascii() or not database.isdigit():
            raise ConfigurationError(f"Redis URL {redacted(url)}: database {database!r} is not a number")


def _has_password(url: str) -> bool:
    parts = urlsplit(url)
    return bool(parts.password) or any(name == "password" and value for name, value in parse_qsl(parts.query))


def connect(url: str, *, retries: int | None = None) -> Redis:
    """A client that survives a Redis restart: each command reconnects with exponential backoff.

    The URL goes to redis-py unchanged, so passwords (`redis://:pw@host`) and TLS (`rediss://`) work;
    check_url first refuses what redis-py would misread.
    """
    check_url(url)
    try:
        import redis
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry
    except ImportError:  # pragma: no cover - redis is a dependency; a stripped install may lack it
        raise ConfigurationError(f"{defaults.REDIS_URL_ENV} is set but the 'redis' package is not installed; "
                                 "pip install 'rivers[redis]'") from None
    retry = Retry(ExponentialBackoff(cap=defaults.REDIS_BACKOFF_CAP_S, base=defaults.REDIS_BACKOFF_BASE_S),
                  defaults.REDIS_RETRIES if retries is None else retries)
    try:
        return redis.Redis.from_url(
            url, retry=retry, retry_on_error=[redis.ConnectionError, redis.TimeoutError],
            socket_connect_timeout=defaults.REDIS_CONNECT_TIMEOUT_S, socket_timeout=defaults.REDIS_SOCKET_TIMEOUT_S,
            health_check_interval=30,
        )
    except ValueError as exc:
        raise ConfigurationError(f"{defaults.REDIS_URL_ENV} is not a Redis URL ({redacted(url)}): {exc}") from None


def check_reachable(url: str) -> None:
    """PING Redis a few times, quickly; raise ExecutionError in one sentence if it does not answer (and
    ConfigurationError first if a RIVERS_* setting cannot be used)."""
    import redis

    defaults.check_environment()
    client = connect(url, retries=defaults.REDIS_START_ATTEMPTS - 1)
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        if not _has_password(url):
            raise ExecutionError(f"Redis at {redacted(url)} requires a password and the URL gives none "
                                 "(redis://:PASSWORD@host:port/db)") from None
        raise ExecutionError(f"Redis at {redacted(url)} refused the credentials in the URL: "
                             f"{_first_line(exc)}") from None
    except redis.RedisError as exc:
        raise ExecutionError(
            f"Cannot reach Redis at {redacted(url)} ({defaults.REDIS_URL_ENV}): {_first_line(exc)}"
        ) from None
    finally:
        client.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0].rstrip(".")
