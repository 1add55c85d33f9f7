"""Step logs through the real CLI: captured wherever a step ran, kept with the run, shown by `rivers logs`,
WARNING+ live above `rivers materialize`'s display, a failed step's output under its summary; the display
counts queued and running steps apart (a terminal test on a pty)."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import CoordinatorProcesses, WorkerProcesses

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PIPELINE = "tests.pipelines.step_logs_pipeline"
RUN_ID = re.compile(r"run ([0-9a-f-]{36}) (?:succeeded|failed)")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


def rivers(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RIVERS_")}
    environ.update({"PYTHONPATH": str(ROOT), **(env or {})})
    return subprocess.run([str(BIN / "rivers"), *args], cwd=cwd, env=environ, capture_output=True, text=True,
                          timeout=timeout, check=False)


def log_lines(stdout: str) -> list[tuple[str, str, str]]:
    """(step, level, message) of each line `rivers logs` printed: `<date> <time>  <step>  <LEVEL>  [stream]  msg`."""
    found = []
    for line in stdout.splitlines():
        match = re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}  (\S+)  (\w+)\s+(?:(?:stdout|stderr)  )?(.*)$", line)
        assert match, f"not a log line: {line!r}"
        found.append((match[1], match[2], match[3]))
    return found


def test_pool_and_async_step_logs_are_kept_in_the_runs_directory_and_shown_by_rivers_logs(tmp_path: Path) -> None:
    """No RIVERS_REDIS_URL: the runs directory defaults to .rivers/runs under the current directory."""
    result = rivers("materialize", PIPELINE, "--select", "chatty,awaited", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run_id = RUN_ID.search(result.stdout)[1]  # type: ignore[index]
    assert (tmp_path / ".rivers" / "runs" / run_id / "logs.jsonl").exists()

    shown = rivers("logs", run_id, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    lines = log_lines(shown.stdout)
    assert ("chatty", "WARNING", "chatty warns: the coffee is cold") in lines
    assert ("awaited", "INFO", "awaited logged") in lines
    assert any(step == "chatty" and level == "INFO" and msg.startswith("chatty printed from pid") for step, level, msg
               in lines)
    assert any(step == "chatty" and msg.startswith("chatty logged from pid") for step, _, msg in lines)
    assert any(step == "awaited" and msg.startswith("awaited printed from pid") for step, _, msg in lines)
    chatty_pid = next(int(msg.rsplit(" ", 1)[1]) for step, _, msg in lines if msg.startswith("chatty printed"))
    # chatty ran in a pool process, not in the rivers process whose pid the run file's "run" record names
    kept = (tmp_path / ".rivers/runs" / run_id / "logs.jsonl").read_text()
    records = [json.loads(line) for line in kept.splitlines()]
    cli_pid = next(r["pid"] for r in records if r["kind"] == "run")
    assert chatty_pid != cli_pid
    assert {r["step"] for r in records if r["kind"] == "running"} == {"chatty", "awaited"}

    only = rivers("logs", run_id, "awaited", cwd=tmp_path)
    assert {step for step, _, _ in log_lines(only.stdout)} == {"awaited"}

    missing = rivers("logs", "no-such-run", cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.startswith("rivers: error: no run 'no-such-run' in ")


def test_a_failed_steps_output_appears_under_the_summary_and_warnings_are_shown(tmp_path: Path) -> None:
    result = rivers("materialize", PIPELINE, cwd=tmp_path, env={"RIVERS_RUNS_DIR": str(tmp_path / "kept")})
    assert result.returncode == 1
    out = result.stdout
    table_end = out.index("└")
    section = out.index("output of step 'fails' (2 lines):")
    assert table_end < section < out.rindex("\nrun ")
    after = out[section:].splitlines()
    assert re.match(r"\d\d:\d\d:\d\d\.\d{3}  INFO     stdout  fails: step one done$", after[1]), after
    assert re.match(r"\d\d:\d\d:\d\d\.\d{3}  WARNING  stderr  fails: about to divide$", after[2]), after
    assert re.search(r"chatty  WARNING  chatty warns: the coffee is cold", out)  # printed as it came
    assert "chatty printed" not in out  # INFO lines are kept, not shown
    run_id = RUN_ID.search(out)[1]  # type: ignore[index]
    assert (tmp_path / "kept" / run_id / "logs.jsonl").exists()
    shown = rivers("logs", run_id, "fails", env={"RIVERS_RUNS_DIR": str(tmp_path / "kept")})
    assert [(level, msg) for _, level, msg in log_lines(shown.stdout)] == [
        ("INFO", "fails: step one done"), ("WARNING", "fails: about to divide")]


def test_logs_of_steps_run_on_redis_workers(redis_url: str, workers: WorkerProcesses, tmp_path: Path) -> None:
    """Submitted: the logs travel with the step's result into Redis; embedded with RIVERS_REDIS_URL set: into the
    runs directory. `rivers logs` finds both; the pid in the lines is one of the worker's pool processes."""
    env = {"RIVERS_REDIS_URL": redis_url}
    procs = workers.start(redis_url)
    coordinators = CoordinatorProcesses(redis_url, tmp_path, f"{PIPELINE}:repo")
    coordinators.start()
    try:
        submitted = rivers("submit", PIPELINE, "--select", "chatty,awaited", "--wait", env=env, cwd=tmp_path)
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        run_id = submitted.stdout.split()[0]
        shown = rivers("logs", run_id, env=env, cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        lines = log_lines(shown.stdout)
        assert ("chatty", "WARNING", "chatty warns: the coffee is cold") in lines
        pool_pids = {child.pid for child in workers.tree(procs[0])}
        printed = [int(msg.rsplit(" ", 1)[1]) for step, _, msg in lines if msg.startswith("chatty printed from pid")]
        assert printed and printed[0] in pool_pids
        assert ("awaited", "INFO", "awaited logged") in lines  # an async step, on the pool process's event loop
        awaited = [int(msg.rsplit(" ", 1)[1]) for step, _, msg in lines if msg.startswith("awaited printed from pid")]
        assert awaited and awaited[0] in pool_pids
        followed = rivers("logs", run_id, "--follow", env=env, cwd=tmp_path, timeout=30)  # the run ended: returns
        assert followed.stdout == shown.stdout
    finally:
        coordinators.close()

    embedded = rivers("materialize", PIPELINE, "--select", "chatty", env=env, cwd=tmp_path)
    assert embedded.returncode == 0, embedded.stderr
    assert "chatty  WARNING  chatty warns: the coffee is cold" in embedded.stdout
    run_id = RUN_ID.search(embedded.stdout)[1]  # type: ignore[index]
    lines = log_lines(rivers("logs", run_id, env=env, cwd=tmp_path).stdout)
    printed = [int(msg.rsplit(" ", 1)[1]) for step, _, msg in lines if msg.startswith("chatty printed from pid")]
    assert printed and printed[0] in {child.pid for child in workers.tree(procs[0])}


def test_follow_prints_lines_as_a_local_run_goes_and_stops_when_it_ends(tmp_path: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RIVERS_")}
    environ["PYTHONPATH"] = str(ROOT)
    run = subprocess.Popen([str(BIN / "rivers"), "materialize", f"{PIPELINE}:slow"], cwd=tmp_path, env=environ,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs = tmp_path / ".rivers" / "runs"
    deadline = time.monotonic() + 30
    while not (runs.exists() and any(runs.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.05)
    [run_dir] = list(runs.iterdir())
    assert '"kind": "end"' not in (run_dir / "logs.jsonl").read_text()  # still going
    follow = subprocess.Popen([str(BIN / "rivers"), "logs", run_dir.name, "--follow"], cwd=tmp_path, env=environ,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = follow.communicate(timeout=60)
    assert follow.returncode == 0, err
    assert '"kind": "end"' in (run_dir / "logs.jsonl").read_text()  # --follow returned once the run ended
    run.communicate(timeout=30)
    assert "slow_first  WARNING  slow_first warns while it runs" in out
    assert "slow_second  INFO     stdout  slow_second is done" in out  # printed seconds after --follow began


def test_terminal_shows_queued_and_running_counts_and_a_warning_above_the_display(tmp_path: Path) -> None:
    """A pty: one pool process, two slow steps: one runs while the other is queued; its WARNING scrolls above."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RIVERS_")}
    environ.update({"PYTHONPATH": str(ROOT), "COLUMNS": "120", "LINES": "40", "TERM": "xterm-256color"})
    pid, fd = pty.fork()
    if pid == 0:  # the child: rivers on the pty
        os.chdir(tmp_path)
        os.execve(str(BIN / "rivers"), [str(BIN / "rivers"), "materialize", f"{PIPELINE}:slow"], environ)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the child closed the pty
            break
        if not chunk:
            break
        chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    screen = ANSI.sub("", b"".join(chunks).decode(errors="replace"))
    assert os.waitstatus_to_exitcode(status) == 0, screen
    assert re.search(r"0 done\s+1 running\s+1 queued", screen), screen
    assert re.search(r"1 done\s+1 running\s+0 queued", screen), screen
    warning = screen.index("slow_first  WARNING  slow_first warns while it runs")
    assert warning < screen.rindex("1 running")  # printed while the display was live, above it
    assert "2/2 steps" in screen


def test_logs_of_steps_run_in_step_pods(redis_url: str, tmp_path: Path) -> None:
    """Step pods (played as in test_step_pod.py): the lines also reach the pod's own output, for `kubectl logs`."""
    from tests.e2e.test_step_pod import PlayedLauncher

    launcher = PlayedLauncher(redis_url)
    try:
        result = rivers("materialize", f"{PIPELINE}:pods", env={"RIVERS_REDIS_URL": redis_url}, cwd=tmp_path)
    finally:
        launcher.close()
    assert result.returncode == 1, result.stderr  # `fails` fails
    assert "output of step 'fails' (2 lines):" in result.stdout
    run_id = RUN_ID.search(result.stdout)[1]  # type: ignore[index]
    lines = log_lines(rivers("logs", run_id, env={"RIVERS_REDIS_URL": redis_url}, cwd=tmp_path).stdout)
    pod_pids = {pod.pid for pod in launcher.pods.values()}
    for step in ("chatty", "awaited"):
        [pid] = [int(msg.rsplit(" ", 1)[1]) for s, _, msg in lines if s == step and " printed from pid " in msg]
        assert pid in pod_pids
    assert ("chatty", "WARNING", "chatty warns: the coffee is cold") in lines
    assert ("fails", "WARNING", "fails: about to divide") in lines
    pod_output = b"".join(pod.stdout.read() for pod in launcher.pods.values() if pod.stdout).decode()
    assert "chatty printed from pid" in pod_output and "fails: about to divide" in pod_output


def test_a_retried_steps_attempts_are_kept_and_told_apart(tmp_path: Path) -> None:
    env = {"FLAKY_MARKER": str(tmp_path / "flaky-ran")}
    result = rivers("materialize", f"{PIPELINE}:retried", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    run_id = RUN_ID.search(result.stdout)[1]  # type: ignore[index]
    shown = log_lines(rivers("logs", run_id, cwd=tmp_path).stdout)
    assert shown == [("flaky", "INFO", "flaky: first attempt fails"),
                     ("flaky#2", "INFO", "flaky: second attempt works")]
    assert [msg for _, _, msg in log_lines(rivers("logs", run_id, "flaky", cwd=tmp_path).stdout)] == [
        "flaky: first attempt fails", "flaky: second attempt works"]
