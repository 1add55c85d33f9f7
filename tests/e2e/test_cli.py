"""`rivers materialize` and friends as a user runs them: real subprocesses, real exit codes."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PIPELINE = "tests.pipelines.cli_pipeline"


def command(name: str) -> list[str]:
    script = BIN / name
    if script.exists():
        return [str(script)]
    module = {"rivers": "main", "rivers-worker": "worker", "rivers-coordinator": "coordinator"}[name]
    return [sys.executable, "-m", f"rivers.cli.{module}"]


def run(*args: str, name: str = "rivers") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIVERS_")}
    return subprocess.run(
        [*command(name), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def statuses(stdout: str) -> dict[str, str]:
    """step -> status, read from the summary table's rows."""
    return dict(re.findall(r"^│ (\S+)\s.*?│ (succeeded|failed|skipped|running|pending)\s", stdout, re.MULTILINE))


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_materialize_succeeds_with_summary_table() -> None:
    result = run("materialize", PIPELINE)
    assert result.returncode == 0, result.stderr
    assert statuses(result.stdout) == dict.fromkeys(["numbers", "greeting", "doubled", "total", "announce"],
                                                    "succeeded")
    final = result.stdout.strip().splitlines()[-1]
    assert re.match(r"run [0-9a-f-]{36} succeeded: success=True", final), final


def test_logs_go_to_stderr_and_not_into_the_table() -> None:
    result = run("materialize", PIPELINE)
    assert result.returncode == 0
    assert "step.succeeded" not in result.stdout
    assert result.stderr.count("step.succeeded") == 5


def test_failing_run_exits_1_and_names_the_error() -> None:
    result = run("materialize", f"{PIPELINE}:failing_repo")
    assert result.returncode == 1, result.stderr
    assert statuses(result.stdout) == {
        "numbers": "succeeded", "greeting": "succeeded", "explode": "failed", "after_explode": "skipped",
    }
    assert "ValueError: cannot handle 3 numbers" in result.stdout
    assert "upstream 'explode'" in result.stdout
    assert "success=False" in result.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("target", "phrase"),
    [
        ("no_such_module_xyz", "no module named 'no_such_module_xyz'"),
        (f"{PIPELINE}:nope", "has no attribute 'nope'"),
        (f"{PIPELINE}:not_a_repo", "not a rivers CodeRepository"),
        (f"{PIPELINE}:broken_repo", "GraphValidationError: unresolved input 'missing_upstream'"),
        (f"{PIPELINE}:", "is not MODULE[:ATTR]"),
    ],
)
def test_bad_targets_exit_2_with_one_line(target: str, phrase: str) -> None:
    result = run("materialize", target)
    assert result.returncode == 2
    assert phrase in one_line_error(result)
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["--select", "zzz"], "AssetNotFoundError: Asset 'zzz' not found"),
        (["--job", "nojob"], "NodeNotFoundError: Job 'nojob' not found"),
        (["--select", "total"], "node 'total' depends on 'doubled' which is not in the job"),
    ],
)
def test_resolution_errors_exit_2_before_any_step(args: list[str], phrase: str) -> None:
    result = run("materialize", PIPELINE, *args)
    assert result.returncode == 2
    assert phrase in one_line_error(result)


def test_select_runs_only_the_selection() -> None:
    result = run("materialize", PIPELINE, "--select", "numbers,doubled", "--select", "greeting")
    assert result.returncode == 0, result.stderr
    assert set(statuses(result.stdout)) == {"numbers", "doubled", "greeting"}


def test_include_upstream_adds_the_upstreams() -> None:
    result = run("materialize", PIPELINE, "--select", "total", "--include-upstream")
    assert result.returncode == 0, result.stderr
    assert set(statuses(result.stdout)) == {"numbers", "doubled", "total"}


def test_job_runs_the_job() -> None:
    result = run("materialize", PIPELINE, "--job", "numbers_only")
    assert result.returncode == 0, result.stderr
    assert statuses(result.stdout) == {"numbers": "succeeded", "doubled": "succeeded"}


def test_select_and_job_together_are_a_usage_error() -> None:
    result = run("materialize", PIPELINE, "--select", "numbers", "--job", "numbers_only")
    assert result.returncode == 2
    assert "not allowed with" in result.stderr


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("rivers", ["submit", PIPELINE]),
        ("rivers", ["runs"]),
        ("rivers", ["run", "some-run-id"]),
        ("rivers-coordinator", ["--repo", PIPELINE]),
        ("rivers-worker", ["--executor", "parallel", "--concurrency", "2"]),
    ],
)
def test_distributed_commands_need_a_redis_url(name: str, args: list[str]) -> None:
    result = run(*args, name=name)
    assert result.returncode == 2
    assert "RIVERS_REDIS_URL" in one_line_error(result)


def test_terminal_gets_live_display_and_quiet_logs() -> None:
    """On a terminal: progress display, INFO step events held back, summary table at the end."""
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIVERS_")}
    env["COLUMNS"] = "120"
    proc = subprocess.Popen(
        [*command("rivers"), "materialize", f"{PIPELINE}:failing_repo"],
        cwd=ROOT, env=env, stdin=slave, stdout=slave, stderr=slave, close_fds=True,
    )
    os.close(slave)
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert proc.wait(timeout=120) == 1
    output = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode(errors="replace"))
    assert re.search(r"\d+ done +\d+ running", output)  # the live display was drawn
    assert "step.started" not in output  # INFO events are quiet while it is shown
    assert "step.failed" in output  # warnings and errors still reach the terminal
    assert "after_explode" in output and "success=False" in output


def test_large_runs_fold_succeeded_rows_but_list_every_failure() -> None:
    import io

    from rich.console import Console

    import rivers as rs
    from rivers.cli.progress import MAX_TABLE_ROWS, RunProgress, print_summary
    from rivers.run import listening
    from tests.pipelines.cli_pipeline import numbered_assets

    assets = numbered_assets(MAX_TABLE_ROWS + 40, fail_every=30)
    repo = rs.CodeRepository(assets=assets, default_executor=rs.Executor.in_process())
    progress = RunProgress()
    with listening(progress):
        result = repo.materialize(raise_on_error=False)
    out = io.StringIO()
    print_summary(Console(file=out, width=200), progress, result)
    text = out.getvalue()
    rows = statuses(text)
    failed = [name for name, status in rows.items() if status == "failed"]
    assert failed == [f"n{i}" for i in range(0, MAX_TABLE_ROWS + 40, 30)]
    assert len(rows) == MAX_TABLE_ROWS
    assert f"(+{40} more: 40 succeeded)" in text
