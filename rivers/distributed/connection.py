"""Redis clients for rivers: retries with backoff, and a one-sentence error when Redis is unreachable."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from rivers import defaults
from rivers.exceptions import ConfigurationError, ExecutionError

if TYPE_CHECKING:
    from redis import Redis


def redis_url(url: str | None = None) -> str | None:
    """The URL given, else RIVERS_REDIS_URL, else None (embedded mode)."""
    return url or os.environ.get(defaults.REDIS_URL_ENV) or None


def redacted(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


def connect(url: str, *, retries: int | None = None) -> Redis:
    """A client that survives a Redis restart: each command reconnects with exponential backoff.

    The URL goes to redis-py unchanged, so passwords (`redis://:pw@host`) and TLS (`rediss://`) work.
    """
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
    """PING Redis a few times, quickly; raise ExecutionError in one sentence if it does not answer."""
    import redis

    client = connect(url, retries=defaults.REDIS_START_ATTEMPTS - 1)
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        raise ExecutionError(f"Redis at {redacted(url)} refused the credentials in the URL: {exc}") from None
    except redis.RedisError as exc:
        raise ExecutionError(
            f"Cannot reach Redis at {redacted(url)} ({defaults.REDIS_URL_ENV}): {_first_line(exc)}"
        ) from None
    finally:
        client.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0].rstrip(".")
