"""Every tunable of rivers, a line each."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

from rivers.exceptions import ConfigurationError


def lease_ms(text: str) -> int:
    """RIVERS_LEASE_MS as a lease length; ConfigurationError for a value that is not one."""
    try:
        value = int(text)
    except ValueError:
        raise ConfigurationError(f"{LEASE_ENV}={text!r}: expected a whole number of milliseconds") from None
    if value < LEASE_MIN_MS:
        raise ConfigurationError(f"{LEASE_ENV}={text!r}: expected at least {LEASE_MIN_MS} ms, two heartbeats "
                                 f"({HEARTBEAT_S:g} s each) plus the fence margin ({FENCE_MARGIN_MS} ms)")
    return value


def redis_retries(text: str) -> int:
    """RIVERS_REDIS_RETRIES as a number of reconnects; ConfigurationError for a value that is not one."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigurationError(f"{REDIS_RETRIES_ENV}={text!r}: expected a whole number of reconnects, 0 or more")
    return value


N = TypeVar("N", int, float)


def positive(name: str, convert: Callable[[str], N], what: str) -> Callable[[str], N]:
    """A parser of a RIVERS_* number more than 0 (`what` it is, for its error)."""
    def parse(text: str) -> N:
        try:
            value: N | None = convert(text)
        except ValueError:
            value = None
        if value is None or not value > 0:
            raise ConfigurationError(f"{name}={text!r}: expected {what}, more than 0")
        return value
    return parse


def seconds(name: str) -> Callable[[str], float]:
    return positive(name, float, "a number of seconds")


def byte_count(name: str) -> Callable[[str], int]:
    return positive(name, int, "a whole number of bytes")


ENVIRONMENT_ERRORS: list[str] = []  # bad RIVERS_* values, a sentence each: check_environment() raises the first


T = TypeVar("T")


def from_env(name: str, default: str, parse: Callable[[str], T]) -> T:
    """A setting read from the environment; a bad value is kept for check_environment() (the CLIs and every run
    call it, and stop with its sentence) and the default used meanwhile, so that importing rivers never fails."""
    text = os.environ.get(name)
    if text is not None:
        try:
            return parse(text)
        except ConfigurationError as exc:
            ENVIRONMENT_ERRORS.append(str(exc))
    return parse(default)


def check_environment() -> None:
    """ConfigurationError naming the first RIVERS_* variable whose value rivers cannot use."""
    if ENVIRONMENT_ERRORS:
        raise ConfigurationError(ENVIRONMENT_ERRORS[0])


def launcher_ttl_ms(lease: int) -> int:
    """Midway between a heartbeat and the lease: a live launcher outlasts a late beat, and a dead one's jobs are
    adopted by another's next beat before their leases expire (3000 ms for the default lease)."""
    return (lease + int(HEARTBEAT_S * 1000)) // 2


INFRA_RETRIES = 2  # retries of a step whose worker died or lost its lease, for steps without a retry policy
LOG_FORMAT_ENV = "RIVERS_LOG_FORMAT"  # console | json
LOG_LEVEL_ENV = "RIVERS_LOG_LEVEL"  # DEBUG | INFO | WARNING | ERROR
REDIS_URL_ENV = "RIVERS_REDIS_URL"
SECRET_ENV = "RIVERS_SECRET"
DEFAULT_LOG_LEVEL = "INFO"

# -- distributed mode (Redis); the ones operators tune also read an environment variable --------
REDIS_CONNECT_TIMEOUT_S = 2.0  # connecting a socket to Redis
REDIS_SOCKET_TIMEOUT_S = 10.0  # one command, longer than every blocking wait below
REDIS_START_ATTEMPTS = 3  # PINGs before "Redis is unreachable" when a run or worker starts
REDIS_RETRIES_ENV = "RIVERS_REDIS_RETRIES"
REDIS_RETRIES = from_env(REDIS_RETRIES_ENV, "12", redis_retries)  # reconnects of one command: 12 ~ 10 s outage
REDIS_BACKOFF_BASE_S = 0.05
REDIS_BACKOFF_CAP_S = 1.0
HEARTBEAT_S = 1.0  # worker: lease renewal and "I consume this queue" heartbeat
FENCE_MARGIN_MS = 1000  # an attempt writes an output only while its lease has at least this long to live
LEASE_ENV = "RIVERS_LEASE_MS"  # also a run's owner key and a repository's serving key; the same in every process
LEASE_MIN_MS = int(2 * HEARTBEAT_S * 1000) + FENCE_MARGIN_MS  # a lease outlives a missed heartbeat by the margin
LEASE_MS = from_env(LEASE_ENV, "5000", lease_ms)  # a running step's lease; the worker renews it every HEARTBEAT_S
EMBEDDED_ALIVE_MS = 10_000  # an embedded run recorded in Redis: its process renews this every HEARTBEAT_S
RECORD_LINGER_S = 0.02  # an embedded run's record gathers events this long before writing them (not on every step)
WORKER_TTL_MS = 5000  # a worker that stopped heartbeating no longer counts as a consumer
WATCH_INTERVAL_S = 1.0  # coordinator: how often it checks the leases of in-flight steps
PICKUP_ENV = "RIVERS_PICKUP_TIMEOUT_S"
PICKUP_TIMEOUT_S = from_env(PICKUP_ENV, "60", seconds(PICKUP_ENV))  # unclaimed, no consumer -> failed
PREFETCH = 1  # worker: jobs claimed per pool slot beyond the running ones, so a slot never waits for Redis
WORKER_BLOCK_S = 1.0  # worker: longest wait for a job before it looks at its signals again
RESULT_TTL_S = 24 * 3600  # results list and reports of a run, kept for a coordinator that takes the run over
FINISHED_JOB_TTL_S = 3600  # a job hash after its step reported (RQ's finished/failed registries show it meanwhile)
PAYLOAD_ENV = "RIVERS_MAX_PAYLOAD_BYTES"
MAX_PAYLOAD_BYTES = from_env(PAYLOAD_ENV, str(16 * 1024 * 1024), byte_count(PAYLOAD_ENV))  # a job, decompressed
RQ_STARTED_TTL_S = 90  # a running job's expiry in RQ's started registry, pushed back by every heartbeat
RQ_WORKER_TTL_S = 15  # a worker's hash in RQ's view; renewed by every heartbeat, so a dead worker leaves it soon
RETENTION_ENV = "RIVERS_RUN_RETENTION_S"
RUN_RETENTION_S = from_env(RETENTION_ENV, "604800", seconds(RETENTION_ENV))  # a run's keys: 7 d after its end
UNSERVED_ENV = "RIVERS_UNSERVED_TIMEOUT_S"
UNSERVED_TIMEOUT_S = from_env(UNSERVED_ENV, "30", seconds(UNSERVED_ENV))  # a run no coordinator serves -> failed

# -- Kubernetes (the pod launcher) ---------------------------------------------------------------
POD_START_TIMEOUT_S = 300.0  # a step pod not running by then fails: "pod never started: <reason>" (--start-timeout)
STEP_JOB_TTL_S = 3600  # ttlSecondsAfterFinished of a step's Job; failed ones are kept that long for inspection
POD_LOG_LINES = 20  # the last lines of a failed pod's log attached to its failure
LAUNCHER_MAX_PODS = 64  # step pods one launcher follows at once (--concurrency); runs cap theirs themselves
LAUNCHER_TTL_MS = launcher_ttl_ms(LEASE_MS)  # a launcher silent this long is dead: its jobs are adopted
WATCH_TIMEOUT_S = 300  # a pod watch is renewed (from its resourceVersion) after this long
