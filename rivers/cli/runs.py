"""`rivers submit`, `rivers runs`, `rivers run RUN_ID`: runs served by rivers-coordinator through Redis."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime

from rivers import defaults
from rivers.cli import UsageError


def distributed_command(args: argparse.Namespace) -> int:
    from rivers.cli.main import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, RIVERS_ERRORS, fail
    from rivers.distributed.connection import connect, redis_url

    url = redis_url()
    if url is None:
        return fail(f"rivers {args.command} needs {defaults.REDIS_URL_ENV}, the Redis a rivers-coordinator serves")
    try:
        if args.command == "submit":
            return submit(args, EXIT_OK, EXIT_FAILED)
        from rivers.distributed.connection import check_reachable

        check_reachable(url)
        client = connect(url)
        if args.command == "runs":
            return show_runs(client)
        return show_run(client, args.run_id)
    except (UsageError, *RIVERS_ERRORS) as exc:
        fail(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("rivers: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def submit(args: argparse.Namespace, ok: int, failed: int) -> int:
    from rivers.cli.config import check_run_config, run_config
    from rivers.cli.main import check_names, load_repository, selected

    repo = load_repository(args.target)
    selection = selected(args)
    check_names(repo, selection, args.job)  # unknown names are usage errors before Redis is touched
    config = run_config(args)
    check_run_config(repo, config)  # so is a bad --config / --set
    if args.job:
        from rivers.distributed.runs import SubmittedRun, new_run_id
        from rivers.distributed.runs import submit as submit_run

        handle = submit_run(SubmittedRun(run_id=new_run_id(), job=args.job, config=config))
    else:
        handle = repo.submit(selection=selection, include_upstream=args.include_upstream, config=config)
    print(handle.run_id)
    if not args.wait:
        return ok
    result = handle.wait()
    for name, message in result.failed_assets:
        print(f"failed  {name}: {message}")
    print(f"run {result.run_id}: {'succeeded' if result.success else 'failed'}")
    return ok if result.success else failed


def show_runs(client: object) -> int:
    from rivers.distributed.runs import list_runs

    for row in list_runs(client):
        when = datetime.fromtimestamp(float(row["created_at"])).isoformat(sep=" ", timespec="seconds")
        print(f"{row['run_id']}  {row['status']:<10} {when}  {row['owner']}")
    return 0


def show_run(client: object, run_id: str) -> int:
    from rivers.distributed.runs import events
    from rivers.queues import keys

    record = client.hgetall(keys.run_key(run_id))  # type: ignore[attr-defined]
    if not record:
        raise UsageError(f"no run '{run_id}' in Redis (runs are kept RIVERS_RUN_RETENTION_S="
                         f"{defaults.RUN_RETENTION_S:g} s after they end)")
    print(f"run {run_id}: {record[b'status'].decode()}")
    for event in events(client, run_id):
        when = datetime.fromtimestamp(event["time"]).isoformat(sep=" ", timespec="milliseconds")
        error = f"  {event['error']}" if "error" in event else ""
        print(f"{when}  {event['event']:<10} {event['step']}{error}")
    return 0


__all__ = ["distributed_command"]
