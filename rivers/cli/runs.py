"""`rivers submit`, `rivers runs`, `rivers run RUN_ID`, `rivers cancel RUN_ID`: runs recorded in Redis (submitted to
rivers-coordinator, or embedded runs made while RIVERS_REDIS_URL was set)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rivers import defaults
from rivers.cli import UsageError
from rivers.cli.submit import add_submit_arguments

RUN_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


# -- arguments (main.py builds the subcommands) -----------------------------------------------------
def runs_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON list, one object per run (default: a table)")
    parser.add_argument("--limit", type=int, default=20, metavar="N", help="show the N latest runs (default: 20)")
    parser.add_argument("--status", choices=RUN_STATUSES, help="only runs with this status (default: all)")


def run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_id", metavar="RUN_ID", help="a run id, as `rivers submit` and `rivers runs` print it")
    parser.add_argument("--json", action="store_true", help="print one JSON object (default: a table)")


def cancel_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_id", metavar="RUN_ID", help="a run id, as `rivers submit` and `rivers runs` print it")
    parser.add_argument("--wait", action="store_true", help="wait until the run has ended (default: return once "
                                                            "the cancel is recorded)")


__all__ = ["add_submit_arguments", "cancel_arguments", "distributed_command", "run_arguments", "runs_arguments"]


# -- dispatch ---------------------------------------------------------------------------------------
def distributed_command(args: argparse.Namespace) -> int:
    from rivers.cli.main import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, RIVERS_ERRORS, fail
    from rivers.distributed.connection import check_reachable, connect, redis_url

    url = redis_url()
    if url is None:
        return fail(f"rivers {args.command} needs {defaults.REDIS_URL_ENV}, the Redis a rivers-coordinator serves")
    try:
        if args.command == "submit":
            from rivers.cli.submit import submit

            return submit(args, EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED)
        check_reachable(url)
        client = connect(url)
        if args.command == "runs":
            return show_runs(client, args)
        if args.command == "cancel":
            return cancel(client, args)
        return show_run(client, args)
    except (UsageError, *RIVERS_ERRORS) as exc:
        fail(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("rivers: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _unknown(run_id: str) -> UsageError:
    return UsageError(f"no run '{run_id}' in Redis (runs are kept RIVERS_RUN_RETENTION_S="
                      f"{defaults.RUN_RETENTION_S:g} s after they end; `rivers runs` lists them)")


# -- rivers runs ------------------------------------------------------------------------------------
def show_runs(client: Any, args: argparse.Namespace) -> int:
    from rivers.distributed.history import list_runs

    if args.limit < 1:
        raise UsageError(f"--limit must be at least 1, not {args.limit}")
    runs = list_runs(client, limit=args.limit, status=args.status)
    if args.json:
        print(json.dumps(runs, indent=2))
        return 0
    header = ("RUN ID", "STATUS", "REPOSITORY", "STARTED", "DURATION", "STEPS", "ERROR")
    rows = [(run["run_id"], run["status"], run["repository"] or "-", _when(run["started_at"] or run["created_at"]),
             _duration(run["duration_s"]), _steps(run["steps"]), _one_line(run["error"]))
            for run in runs]
    _table(header, rows)
    if not runs:
        print("(no runs" + (f" with status {args.status}" if args.status else "") + ")")
    return 0


def _steps(counts: dict[str, int]) -> str:
    """`3/5 ok, 1 failed, 1 skipped`: succeeded of all, then what did not succeed."""
    text = f"{counts.get('succeeded', 0)}/{counts.get('total', 0)} ok"
    for status in ("failed", "skipped", "running"):
        if counts.get(status):
            text += f", {counts[status]} {status}"
    return text


# -- rivers run RUN_ID -----------------------------------------------------------------------------
def show_run(client: Any, args: argparse.Namespace) -> int:
    from rivers.distributed.history import run_detail

    detail = run_detail(client, args.run_id)
    if detail is None:
        raise _unknown(args.run_id)
    if args.json:
        print(json.dumps(detail, indent=2))
        return 0
    print(f"run {detail['run_id']}: {detail['status']}")
    for label, value in (("repository", detail["repository"] or "-"), ("kind", detail["kind"]),
                         ("created", _when(detail["created_at"])), ("started", _when(detail["started_at"])),
                         ("duration", _duration(detail["duration_s"])), ("steps", _steps(detail["steps"])),
                         ("owner", detail["owner"] or "-")):
        print(f"  {label:<11}{value}")
    if detail["error"]:
        print(f"  {'error':<11}{_one_line(detail['error'], 200)}")
    print()
    header = ("STEP", "STATUS", "ATTEMPTS", "WORKER", "REASON", "DURATION", "ERROR")
    rows = [(step["step"], step["status"], str(step["attempts"]), step.get("worker") or "-",
             step.get("reason") or "-", _duration(step.get("duration_s")), _one_line(step.get("error")))
            for step in detail["step_runs"]]
    _table(header, rows)
    retried = [(step["step"], failure) for step in detail["step_runs"] for failure in step.get("failures", [])
               if failure.get("attempt", 0) < step["attempts"]]
    if retried:
        print("\nretried attempts:")
        _table(("STEP", "ATTEMPT", "WORKER", "REASON", "DURATION", "ERROR"), [
            (key, str(failure.get("attempt", "?")), failure.get("worker") or "-", failure.get("reason") or "-",
             _duration(failure.get("duration_s")), _one_line(failure.get("error"))) for key, failure in retried])
    return 0


# -- rivers cancel RUN_ID ---------------------------------------------------------------------------
def cancel(client: Any, args: argparse.Namespace) -> int:
    from rivers.distributed.runs import FINAL, cancel_run, end_cancelled
    from rivers.queues import keys

    before = cancel_run(client, args.run_id)
    if before is None:
        raise _unknown(args.run_id)
    if before in FINAL:
        print(f"run {args.run_id} already ended: {before}; nothing to cancel")
        return 0
    if before == "queued" and end_cancelled(client, args.run_id):
        print(f"run {args.run_id} cancelled (no rivers-coordinator serves its repository; it never started)")
        return 0
    print(f"run {args.run_id}: cancel requested; its coordinator withdraws its queued steps and stops it")
    if args.wait:
        while (status := (client.hget(keys.run_key(args.run_id), "status") or b"").decode()) not in FINAL:
            client.blpop([keys.run_done_key(args.run_id)], timeout=1)
        print(f"run {args.run_id} {status}")
    return 0


# -- formatting ------------------------------------------------------------------------------------
def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Left-aligned columns, two spaces apart; the last column is never padded."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip())


def _when(timestamp: float | None) -> str:
    if not timestamp:
        return "-"
    return datetime.fromtimestamp(timestamp).isoformat(sep=" ", timespec="seconds")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 0.01:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return time.strftime("%H:%M:%S", time.gmtime(seconds))


def _one_line(text: str | None, limit: int = 100) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"
