"""Every command's parser: every option says its default, --version and --log-level everywhere, and the
epilog lists the environment variables and exit codes."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

import pytest

from rivers import defaults
from rivers.cli import coordinator, main, worker
from rivers.cli.common import ENV_HELP, apply_log_level
from rivers.cli.stopping import redis_answers
from tests.redis_server import free_port


def parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    found = [("rivers", main.build_parser()), ("rivers-worker", worker.build_parser()),
             ("rivers-coordinator", coordinator.build_parser())]
    for action in found[0][1]._actions:
        if isinstance(action, argparse._SubParsersAction):
            found += [(f"rivers {name}", sub) for name, sub in action.choices.items()]
    return found


PARSERS = parsers()


@pytest.mark.parametrize(("name", "parser"), PARSERS, ids=[name for name, _ in PARSERS])
def test_every_option_has_help_naming_its_default(name: str, parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._VersionAction | argparse._SubParsersAction):
            continue
        assert action.help, f"{name} {action.dest}: no help"
        if action.option_strings:
            assert "default" in action.help or "(required)" in action.help, f"{name} {action.option_strings}"


@pytest.mark.parametrize(("name", "parser"), PARSERS, ids=[name for name, _ in PARSERS])
def test_every_command_has_log_level_and_lists_environment_and_exit_codes(
        name: str, parser: argparse.ArgumentParser) -> None:
    options = {option for action in parser._actions for option in action.option_strings}
    assert "--log-level" in options
    if " " not in name:  # a top-level command
        assert "--version" in options
    epilog = parser.epilog or ""
    assert "environment variables:" in epilog and "exit codes:" in epilog
    assert defaults.REDIS_URL_ENV in epilog and defaults.LOG_LEVEL_ENV in epilog
    for code in (0, 1, 2, 130):
        assert f"\n  {code} " in epilog


def test_epilog_variables_are_described() -> None:
    for name, parser in PARSERS:
        listed = (parser.epilog or "").split("exit codes:")[0]
        for line in listed.splitlines()[1:]:
            if line.strip():
                assert line.split()[0] in ENV_HELP, (name, line)


def test_log_level_before_or_after_the_subcommand() -> None:
    parser = main.build_parser()
    assert parser.parse_args(["--log-level", "debug", "materialize", "m"]).log_level == "DEBUG"
    assert parser.parse_args(["materialize", "m", "--log-level", "error"]).log_level == "ERROR"
    assert parser.parse_args(["materialize", "m"]).log_level is None
    assert parser.parse_args(["--log-level", "info", "runs"]).log_level == "INFO"


def test_log_level_sets_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(defaults.LOG_LEVEL_ENV, "DEBUG")
    apply_log_level(argparse.Namespace(log_level="WARNING"))
    assert os.environ[defaults.LOG_LEVEL_ENV] == "WARNING"
    apply_log_level(argparse.Namespace(log_level=None))
    assert os.environ[defaults.LOG_LEVEL_ENV] == "WARNING"


def test_worker_executor_defaults_to_parallel() -> None:
    args = worker.build_parser().parse_args([])
    assert args.executor == "parallel"
    assert args.name is None


@pytest.mark.parametrize(("argv", "message"), [
    (["--name", "a b"], "printable, without spaces"),
    (["--executor", "kubernetes", "--name", "x"], "names a parallel worker"),
    (["--step", "abc"], "--step is for step pods"),
    (["--concurrency", "0"], "at least 1"),
])
def test_worker_argument_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        worker.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_redis_answers_names_why_not() -> None:
    started = time.monotonic()
    reason = redis_answers(f"redis://127.0.0.1:{free_port()}/0")
    assert reason is not None and "refused" in reason.lower()
    assert time.monotonic() - started < 2


def test_stop_watch_ends_the_process_when_redis_is_gone() -> None:
    """A process blocked in its own graceful stop is ended by the watch, with a log line naming Redis."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    script = f"""
import signal, sys, time
from rivers.cli.stopping import StopWatch
StopWatch("worker", {url!r}).start()
signal.signal(signal.SIGTERM, lambda *_: None)  # a graceful stop that never ends
print("ready", flush=True)
time.sleep(60)
"""
    env = {**os.environ, "RIVERS_LOG_FORMAT": "json"}
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=5)
    assert process.returncode == 1
    assert '"worker.exit"' in err and "does not answer" in err and url in err
