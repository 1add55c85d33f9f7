"""RIVERS_LEASE_MS (the lease of running steps, run owners and serving keys) and RIVERS_REDIS_RETRIES (how many
times a Redis command reconnects), read once when rivers is imported."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from rivers import defaults
from rivers.exceptions import ConfigurationError
from rivers.kubernetes.launcher import Launcher
from tests.conftest import ROOT

HEARTBEAT_MS = int(defaults.HEARTBEAT_S * 1000)


SHOW = """
from rivers import defaults
from rivers.distributed.connection import connect

client = connect("redis://127.0.0.1:1/0")  # never used: its retries are what a command of rivers gets
print(defaults.LEASE_MS, defaults.LAUNCHER_TTL_MS, client.get_connection_kwargs()["retry"].get_retries())
"""


def imported(lease: str | None, **env: str) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter importing rivers with RIVERS_LEASE_MS set to `lease` (None: unset) and `env`; prints
    the lease, the launcher TTL derived from it and the reconnects of a Redis command."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RIVERS_")}
    if lease is not None:
        environ[defaults.LEASE_ENV] = lease
    return subprocess.run([sys.executable, "-c", SHOW], cwd=ROOT, env={**environ, **env}, capture_output=True,
                          text=True, timeout=60, check=False)


def test_the_default_lease_is_5_s_and_a_launcher_is_dead_after_3_s() -> None:
    result = imported(None)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["5000", "3000", "12"]


@pytest.mark.parametrize(("lease", "launcher_ttl"), [("3000", "2000"), ("12000", "6500")])
def test_a_valid_value_sets_the_lease_and_the_launcher_ttl_follows(lease: str, launcher_ttl: str) -> None:
    result = imported(lease)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [lease, launcher_ttl, "12"]


def test_the_shortest_lease_outlives_a_missed_heartbeat_by_the_fence_margin() -> None:
    assert defaults.LEASE_MIN_MS == 2 * HEARTBEAT_MS + defaults.FENCE_MARGIN_MS == 3000
    assert defaults.lease_ms(str(defaults.LEASE_MIN_MS)) == defaults.LEASE_MIN_MS


@pytest.mark.parametrize("lease", [3000, 3001, 5000, 60_000])
def test_a_launcher_ttl_lies_between_a_heartbeat_and_the_lease(lease: int) -> None:
    """A live launcher beats before its TTL runs out; a dead one's jobs are adopted at the next beat of another
    one after its TTL, by the time their leases expire."""
    ttl = defaults.launcher_ttl_ms(lease)
    assert HEARTBEAT_MS < ttl and ttl + HEARTBEAT_MS <= lease


@pytest.mark.parametrize("text", ["abc", "", "4000.0", "5e3", "5 s"])
def test_a_value_that_is_not_a_whole_number_is_refused(text: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        defaults.lease_ms(text)
    assert str(info.value) == f"RIVERS_LEASE_MS={text!r}: expected a whole number of milliseconds"


@pytest.mark.parametrize("text", ["2999", "2500", "0", "-5000"])
def test_a_lease_too_short_for_the_heartbeat_and_the_fence_is_refused(text: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        defaults.lease_ms(text)
    assert str(info.value) == (f"RIVERS_LEASE_MS={text!r}: expected at least 3000 ms, two heartbeats (1 s each) "
                               "plus the fence margin (1000 ms)")


def worker_with(**env: str) -> subprocess.CompletedProcess[str]:
    """`rivers-worker` started with `env` (it stops before it would reach Redis when a setting is bad)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RIVERS_")}
    return subprocess.run([sys.executable, "-m", "rivers.cli.worker", "--redis-url", "redis://127.0.0.1:1/0"],
                          cwd=ROOT, env={**environ, **env}, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize(("text", "reason"), [("abc", "expected a whole number of milliseconds"),
                                              ("1000", "expected at least 3000 ms, two heartbeats (1 s each) "
                                                       "plus the fence margin (1000 ms)")])
def test_a_process_started_with_a_bad_value_stops_naming_it_in_one_line(text: str, reason: str) -> None:
    """A command stops at once with one line and exit 2; importing rivers never fails over a setting (the default
    stands in until a run or a Redis connection is made, which raise ConfigurationError with that sentence)."""
    result = worker_with(RIVERS_LEASE_MS=text)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.strip() == f"rivers-worker: error: RIVERS_LEASE_MS={text!r}: {reason}"
    assert imported(text).stdout.split() == ["5000", "3000", "12"]
    checked = subprocess.run([sys.executable, "-c", "from rivers import defaults; defaults.check_environment()"],
                             cwd=ROOT, env={**os.environ, defaults.LEASE_ENV: text}, capture_output=True, text=True,
                             timeout=60, check=False)
    assert checked.stderr.strip().splitlines()[-1] == (
        f"rivers.exceptions.ConfigurationError: RIVERS_LEASE_MS={text!r}: {reason}")


@pytest.mark.parametrize("retries", ["0", "3", "40"])
def test_redis_retries_set_how_often_a_command_reconnects(retries: str) -> None:
    result = imported(None, RIVERS_REDIS_RETRIES=retries)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["5000", "3000", retries]


@pytest.mark.parametrize("text", ["-1", "", "ten", "2.0"])
def test_a_bad_number_of_redis_retries_is_refused(text: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        defaults.redis_retries(text)
    assert str(info.value) == f"RIVERS_REDIS_RETRIES={text!r}: expected a whole number of reconnects, 0 or more"
    result = worker_with(RIVERS_REDIS_RETRIES=text)
    assert (result.returncode, result.stderr.strip()) == (2, f"rivers-worker: error: {info.value}")


@pytest.mark.parametrize("name", [defaults.LEASE_ENV, defaults.REDIS_RETRIES_ENV])
def test_the_pod_launcher_passes_its_lease_and_retries_to_step_pods(monkeypatch: pytest.MonkeyPatch,
                                                                    name: str) -> None:
    """A step pod renews its step's lease and waits for Redis as its launcher does."""
    assert name not in Launcher("redis://127.0.0.1:1/0").pod_env
    monkeypatch.setenv(name, "8000")
    assert Launcher("redis://127.0.0.1:1/0").pod_env[name] == "8000"


@pytest.mark.parametrize(("name", "text", "expected"), [
    ("RIVERS_PICKUP_TIMEOUT_S", "soon", "expected a number of seconds, more than 0"),
    ("RIVERS_RUN_RETENTION_S", "0", "expected a number of seconds, more than 0"),
    ("RIVERS_UNSERVED_TIMEOUT_S", "-3", "expected a number of seconds, more than 0"),
    ("RIVERS_MAX_PAYLOAD_BYTES", "16MB", "expected a whole number of bytes, more than 0"),
])
def test_every_numeric_setting_is_refused_in_one_line_by_every_command(name: str, text: str, expected: str) -> None:
    environ = {**{k: v for k, v in os.environ.items() if not k.startswith("RIVERS_")}, name: text}
    sentence = f"{name}={text!r}: {expected}"
    assert (worker_with(**{name: text}).stderr.strip()) == f"rivers-worker: error: {sentence}"
    for command, prog in ((["rivers.cli.main", "materialize", "examples/landing.py"], "rivers"),
                          (["rivers.cli.coordinator", "--repo", "examples.landing", "--redis-url",
                            "redis://127.0.0.1:1/0"], "rivers-coordinator")):
        result = subprocess.run([sys.executable, "-m", *command], cwd=ROOT, env=environ, capture_output=True,
                                text=True, timeout=60, check=False)
        assert (result.returncode, result.stderr.strip()) == (2, f"{prog}: error: {sentence}")
