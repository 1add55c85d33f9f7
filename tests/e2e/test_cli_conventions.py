"""CLI conventions and process hygiene, driven as an operator does: real commands, a real redis-server.

`--version` and `--help` of every command; `--name`, `--log-level` and the default executor of workers;
coordinator and workers stopped by SIGINT/SIGTERM within 5 s, also with Redis gone; a reader that went away
(`rivers runs | head -1`) ends the command without a traceback; `honcho start` stopped with Ctrl-C needs no SIGKILL.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.conftest import wake_stopping
from tests.e2e.test_cli import BIN, command
from tests.redis_server import RedisServer, free_port, wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = "tests.pipelines.cli_pipeline"
COMMANDS = ["rivers", "rivers-worker", "rivers-coordinator"]
STOP_WITHIN_S = 5.0


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIVERS_")}
    env.update({"RIVERS_LOG_FORMAT": "json", **extra})
    return env


def run(name: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*command(name), *args], cwd=ROOT, env=environment(**env), capture_output=True, text=True,
                          timeout=60, check=False)


# -- --version and --help ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", COMMANDS)
def test_version_on_every_command(name: str) -> None:
    import rivers

    result = run(name, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{name} {version('rivers')}"
    assert rivers.__version__ == version("rivers")


@pytest.mark.parametrize(("name", "variables"), [
    ("rivers", ["RIVERS_REDIS_URL", "RIVERS_LOG_LEVEL", "RIVERS_LOG_FORMAT", "RIVERS_SECRET"]),
    ("rivers-worker", ["RIVERS_REDIS_URL", "RIVERS_LOG_LEVEL", "RIVERS_SECRET", "RIVERS_WORKER_IMAGE"]),
    ("rivers-coordinator", ["RIVERS_REDIS_URL", "RIVERS_LOG_LEVEL", "RIVERS_SECRET", "RIVERS_RUN_RETENTION_S"]),
])
def test_help_lists_defaults_environment_and_exit_codes(name: str, variables: list[str]) -> None:
    result = run(name, "--help", COLUMNS="120")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "--log-level" in text and "(default: $RIVERS_LOG_LEVEL, else INFO)" in text
    env_part = text[text.index("environment variables:"):text.index("exit codes:")]
    for variable in variables:
        assert f"\n  {variable} " in env_part, variable
    exits = text[text.index("exit codes:"):]
    for code in ("0", "1", "2", "130"):
        assert f"\n  {code} " in exits, code


def option_help(text: str, option: str) -> str:
    """An option's entry in --help, its wrapped lines joined."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(option))
    entry = [lines[start]]
    for line in lines[start + 1:]:
        if not line.strip() or line.lstrip().startswith("-") or not line.startswith("   "):
            break
        entry.append(line.strip())
    return " ".join(entry)


def test_worker_help_shows_the_executor_default() -> None:
    assert "(default: parallel)" in option_help(run("rivers-worker", "--help").stdout, "--executor")


def test_subcommand_help_lists_defaults() -> None:
    text = run("rivers", "materialize", "--help").stdout
    for option, default in [("--select", "(default: all)"), ("--include-upstream", "(default: only the selected"),
                            ("--job", "(default: none)")]:
        assert default in option_help(text, option), option


# -- --log-level, --executor default, --name -----------------------------------------------------------
def test_log_level_option_overrides_the_environment() -> None:
    loud = run("rivers", "materialize", PIPELINE, RIVERS_LOG_LEVEL="INFO")
    quiet = run("rivers", "--log-level", "warning", "materialize", PIPELINE, RIVERS_LOG_LEVEL="INFO")
    after = run("rivers", "materialize", PIPELINE, "--log-level", "ERROR", RIVERS_LOG_LEVEL="DEBUG")
    assert (loud.returncode, quiet.returncode, after.returncode) == (0, 0, 0), quiet.stderr
    assert loud.stderr.count("step.succeeded") == 5
    assert "step.succeeded" not in quiet.stderr
    assert "step.succeeded" not in after.stderr


def test_bad_log_level_is_a_usage_error() -> None:
    result = run("rivers-worker", "--log-level", "LOUD")
    assert result.returncode == 2
    assert "invalid choice: 'LOUD'" in result.stderr


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def test_worker_defaults_to_the_parallel_executor(own_redis: RedisServer) -> None:
    result = run("rivers-worker", "--burst", "--concurrency", "1", "--redis-url", own_redis.url)
    assert result.returncode == 0, result.stderr
    started = next(json.loads(line) for line in result.stderr.splitlines() if "worker.started" in line)
    assert started["executor"] == "parallel" and started["queue"] == "rivers:parallel"


def test_worker_name_is_its_name_in_redis_and_rq(own_redis: RedisServer, tmp_path: Path) -> None:
    from rq import Worker as RqWorker

    log = (tmp_path / "worker.log").open("wb")
    process = subprocess.Popen([*command("rivers-worker"), "--name", "etl-1", "--concurrency", "1", "--redis-url",
                                own_redis.url], cwd=ROOT, env=environment(), stdout=log, stderr=subprocess.STDOUT)
    client = own_redis.client()
    try:
        wait_for(lambda: client.exists("rivers:worker:etl-1"), 30, message="worker etl-1 to register")
        assert "etl-1" in [worker.name for worker in RqWorker.all(connection=client)]
        twin = run("rivers-worker", "--name", "etl-1", "--redis-url", own_redis.url)
        assert twin.returncode == 2
        assert "a live worker is already named 'etl-1'" in twin.stderr and "Traceback" not in twin.stderr
    finally:
        process.terminate()
        wake_stopping([process], {process.pid: own_redis.url})
        process.wait(STOP_WITHIN_S)
        client.close()


@pytest.mark.parametrize("name", ["", "two words"])
def test_worker_name_must_be_printable_without_spaces(name: str) -> None:
    result = run("rivers-worker", "--name", name, "--redis-url", "redis://127.0.0.1:1/0")
    assert result.returncode == 2
    assert "a worker's name is printable, without spaces" in result.stderr


# -- stopping ----------------------------------------------------------------------------------------
def start_daemon(kind: str, url: str, log_path: Path, repo: str = PIPELINE,
                 cwd: Path = ROOT) -> subprocess.Popen[bytes]:
    args = {"worker": ["--concurrency", "1"], "coordinator": ["--repo", repo]}[kind]
    with log_path.open("wb") as log:
        process = subprocess.Popen([*command(f"rivers-{kind}"), *args, "--redis-url", url, "--log-level", "INFO"],
                                   cwd=cwd, env=environment(), stdout=log, stderr=subprocess.STDOUT)

    def started() -> bool:
        assert process.poll() is None, log_path.read_text()
        return f'"{kind}.started"' in log_path.read_text()

    wait_for(started, 30, message=f"{kind} to start")
    return process


def stop(process: subprocess.Popen[bytes], signum: int) -> tuple[int, float]:
    """Send `signum`; the exit code and how long the process took to end (it is killed past the limit)."""
    begin = time.monotonic()
    process.send_signal(signum)
    try:
        code = process.wait(STOP_WITHIN_S + 5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(f"still running {STOP_WITHIN_S + 5:g} s after {signal.Signals(signum).name}") from None
    return code, time.monotonic() - begin


def events(log_path: Path) -> list[dict[str, object]]:
    text = log_path.read_text()
    assert "Traceback" not in text, text
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("kind", ["worker", "coordinator"])
def test_stops_within_5s_with_redis_down(kind: str, signum: int, tmp_path: Path) -> None:
    server = RedisServer().start()
    log_path = tmp_path / f"{kind}.log"
    try:
        process = start_daemon(kind, server.url, log_path)
        server.stop()
        time.sleep(0.3)  # it notices nothing yet: its next Redis command would retry for ~10 s
        code, took = stop(process, signum)
    finally:
        server.close()
    assert took < STOP_WITHIN_S, f"{kind} took {took:.1f} s to stop"
    assert code == 1
    exit_line = [e for e in events(log_path) if e["event"] == f"{kind}.exit"]
    assert exit_line, log_path.read_text()
    assert "does not answer" in str(exit_line[0]["reason"]) and server.url in str(exit_line[0]["reason"])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("kind", ["worker", "coordinator"])
def test_stops_cleanly_with_redis_up(kind: str, signum: int, own_redis: RedisServer, tmp_path: Path) -> None:
    log_path = tmp_path / f"{kind}.log"
    process = start_daemon(kind, own_redis.url, log_path)
    code, took = stop(process, signum)
    assert (code, took < STOP_WITHIN_S) == (0, True), log_path.read_text()
    assert f"{kind}.stopped" in [e["event"] for e in events(log_path)]
    if kind == "worker":
        client = own_redis.client()
        assert not client.keys("rivers:worker:*")  # it said goodbye: not listed as a consumer any more
        client.close()


WAITING_REPO = """
from obstore.store import LocalStore

import rivers as rs


@rs.Asset
def waits_for_a_worker() -> int:
    return 1


repo = rs.CodeRepository(assets=[waits_for_a_worker], default_executor=rs.Executor.parallel(),
                         default_io_handler=rs.PickleIOHandler(LocalStore({store!r}, mkdir=True)))
"""


def test_coordinator_leaves_at_once_on_a_second_signal(own_redis: RedisServer, tmp_path: Path) -> None:
    """One signal: it would finish the runs it owns (here, one that waits for a worker); two: it leaves."""
    (tmp_path / "waiting_repo.py").write_text(WAITING_REPO.format(store=str(tmp_path / "store")))
    log_path = tmp_path / "coordinator.log"
    process = start_daemon("coordinator", own_redis.url, log_path, repo="waiting_repo", cwd=tmp_path)
    submitted = subprocess.run([*command("rivers"), "submit", "waiting_repo"], cwd=tmp_path, capture_output=True,
                               text=True, env=environment(RIVERS_REDIS_URL=own_redis.url), timeout=60, check=False)
    assert submitted.returncode == 0, submitted.stderr
    wait_for(lambda: '"run.started"' in log_path.read_text(), 30, message="the run to start")
    process.send_signal(signal.SIGTERM)
    time.sleep(1.0)
    assert process.poll() is None, "one signal: the coordinator waits for the run it owns"
    code, took = stop(process, signal.SIGINT)
    assert (code, took < STOP_WITHIN_S) == (1, True)
    reasons = [str(e["reason"]) for e in events(log_path) if e["event"] == "coordinator.exit"]
    assert reasons and "a second stop signal" in reasons[0]


# -- a reader that went away ------------------------------------------------------------------------------
def closed_pipe_run(*args: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    """Run `rivers ARGS` with stdout a pipe whose reader has already gone (`| head` after its first line)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([*command("rivers"), *args], cwd=ROOT, env=environment(**env), stdout=write_end,
                              stderr=subprocess.PIPE, timeout=60, check=False)
    finally:
        os.close(write_end)


@pytest.mark.parametrize("args", [["runs"], ["run", "RUN_ID"], ["materialize", PIPELINE]],
                         ids=["runs", "run", "materialize"])
def test_closed_stdout_ends_quietly(args: list[str], own_redis: RedisServer) -> None:
    submitted = run("rivers", "submit", PIPELINE, RIVERS_REDIS_URL=own_redis.url)
    run_id = submitted.stdout.strip()
    assert submitted.returncode == 0 and run_id, submitted.stderr
    result = closed_pipe_run(*[run_id if a == "RUN_ID" else a for a in args], RIVERS_REDIS_URL=own_redis.url,
                             RIVERS_LOG_LEVEL="WARNING")
    stderr = result.stderr.decode()
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
    assert result.returncode == 141


def test_runs_piped_to_head(own_redis: RedisServer) -> None:
    for _ in range(3):
        assert run("rivers", "submit", PIPELINE, RIVERS_REDIS_URL=own_redis.url).returncode == 0
    pipeline = f"{' '.join(command('rivers'))} runs | head -1"
    result = subprocess.run(["sh", "-c", pipeline], cwd=ROOT, env=environment(RIVERS_REDIS_URL=own_redis.url),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0
    assert result.stderr == ""
    assert len(result.stdout.splitlines()) == 1


# -- honcho ----------------------------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("honcho", path=str(BIN)) is None and shutil.which("honcho") is None,
                    reason="honcho is not installed (pip install -e '.[test]')")
def test_honcho_stopped_with_ctrl_c_needs_no_sigkill(tmp_path: Path) -> None:
    """The Procfile as the README runs it; Redis keeps its data under the project directory."""
    honcho = shutil.which("honcho", path=str(BIN)) or shutil.which("honcho")
    assert honcho is not None
    port = free_port()
    env = environment(REDIS_PORT=str(port), RIVERS_REPO=PIPELINE, RIVERS_CONCURRENCY="1",
                      PYTHONPATH=str(ROOT), PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    process = subprocess.Popen([honcho, "-f", str(ROOT / "Procfile"), "-d", str(tmp_path), "start"], cwd=tmp_path,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:  # until the worker and the coordinator are up
            output.append(line)
            if sum(marker in "".join(output) for marker in ('"worker.started"', '"coordinator.started"')) == 2:
                break
        assert process.poll() is None, "".join(output)
        begin = time.monotonic()
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=20)
        took = time.monotonic() - begin
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = "".join(output) + rest
    assert "SIGKILL" not in text, text
    assert took < STOP_WITHIN_S, text
    assert "Traceback" not in text, text
    assert (tmp_path / ".rivers" / "redis").is_dir()
    assert list((tmp_path / ".rivers" / "redis").iterdir()), "Redis kept nothing in the project directory"


# -- Ctrl-C during `rivers materialize` -----------------------------------------------------------------
SLOW_REPO = """
import time

import rivers as rs


@rs.Asset
def quick() -> int:
    return 1


@rs.Asset
def slow(quick: int) -> int:
    open("slow-started", "w").close()  # the test interrupts once the step's function runs
    time.sleep(60)
    return quick


@rs.Asset
def after(slow: int) -> int:
    return slow


repo = rs.CodeRepository(assets=[quick, slow, after], default_executor=rs.Executor.in_process())
"""


def test_ctrl_c_prints_the_partial_table_and_the_run_id(tmp_path: Path) -> None:
    (tmp_path / "slow_repo.py").write_text(SLOW_REPO)
    # Ctrl-C as a terminal sends it, even when this suite was started with SIGINT ignored (a shell's background
    # job): an ignored SIGINT is inherited, and Python then installs no KeyboardInterrupt handler
    default_sigint = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                      "os.execv(sys.argv[1], sys.argv[1:])")
    args = [*command("rivers"), "materialize", "slow_repo"]
    if not os.path.isabs(args[0]):
        args[0] = shutil.which(args[0]) or args[0]
    process = subprocess.Popen([sys.executable, "-c", default_sigint, *args], cwd=tmp_path,
                               env=environment(RIVERS_LOG_LEVEL="INFO"), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    for line in process.stderr:  # JSON logs (not a terminal): wait until the slow step runs
        if '"step.started"' in line and '"slow"' in line:
            break
    # step.started is logged just before the run's display hears of it: wait for the function itself
    wait_for(lambda: (tmp_path / "slow-started").exists(), 30, message="the slow step's function to run")
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=30)  # what is checked is the table and the code, not how fast (0.2 s idle)
    assert process.returncode == 130
    assert "Traceback" not in out
    rows = dict(re.findall(r"^│ (\S+)\s.*?│ (succeeded|running|pending)\s", out, re.MULTILINE))
    assert rows == {"quick": "succeeded", "slow": "running", "after": "pending"}, out
    final = out.strip().splitlines()[-1]
    assert re.match(r"run [0-9a-f-]{36} interrupted: 1 succeeded, 0 failed, 1 running, 1 not started", final), final
