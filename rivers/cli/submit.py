"""`rivers submit MODULE[:ATTR]`: hand a run to the rivers-coordinator serving that repository; with `--wait`,
follow it with the same live display and summary table as `rivers materialize`, fed from the run's events in Redis.

A run nobody serves is not waited on silently: `--wait` ends it as failed after --unserved-timeout seconds
("no rivers-coordinator serves shop:repo; start one with rivers-coordinator --repo shop:repo"), and without
`--wait` the same is said at once as a warning when no coordinator serves the repository right now.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from rivers import defaults
from rivers.cli.progress import RunProgress, print_interrupted, print_summary
from rivers.queues import keys
from rivers.results import StepResult

POLL_S = 0.2  # how often --wait reads the run's new events


def add_submit_arguments(parser: argparse.ArgumentParser) -> None:
    from rivers.cli.common import epilog
    from rivers.cli.main import EXIT_CODES

    parser.epilog = epilog([defaults.REDIS_URL_ENV, defaults.LOG_LEVEL_ENV, defaults.LOG_FORMAT_ENV,
                            "RIVERS_UNSERVED_TIMEOUT_S"], EXIT_CODES)
    parser.add_argument("--wait", action="store_true",
                        help="follow the run with a live display and its summary table; exit 0 if it succeeded, 1 "
                             "if not (default: print its id and return)")
    parser.add_argument("--unserved-timeout", type=float, metavar="SECONDS", default=defaults.UNSERVED_TIMEOUT_S,
                        help="with --wait: fail the run after this long when no rivers-coordinator serves its "
                             "repository (default: $RIVERS_UNSERVED_TIMEOUT_S, else 30)")


@dataclass(frozen=True)
class PlannedStep:
    """What RunProgress reads of a step, rebuilt from a `planned` event."""

    key: str
    outputs: tuple[str, ...] = ()
    upstream_steps: frozenset[str] = field(default_factory=frozenset)
    executor: str = ""


def submit(args: argparse.Namespace, ok: int, failed: int, interrupted: int) -> int:
    from rivers.cli.config import check_run_config, run_config
    from rivers.cli.main import check_names, load_repository, selected
    from rivers.distributed.connection import check_reachable, connect, redis_url
    from rivers.distributed.runs import SubmittedRun, new_run_id, repository_of, serving, unserved_message
    from rivers.distributed.runs import submit as submit_run

    repo = load_repository(args.target)
    selection = selected(args)
    check_names(repo, selection, args.job)  # unknown names are usage errors before Redis is touched
    config = run_config(args)
    check_run_config(repo, config)  # so is a bad --config / --set
    repository = repository_of(args.target, repo)
    url = redis_url()
    assert url is not None
    check_reachable(url)
    handle = submit_run(SubmittedRun(run_id=new_run_id(), selection=None if args.job else selection, job=args.job,
                                     include_upstream=args.include_upstream, config=config, repository=repository))
    print(handle.run_id, flush=True)
    client = connect(url)
    if not serving(client, repository):
        print(f"rivers: warning: {unserved_message(repository)} (the run fails after "
              f"{args.unserved_timeout:g} s unless one starts)", file=sys.stderr)
    if not args.wait:
        return ok
    return follow(client, handle.run_id, repository, args.unserved_timeout, ok, failed, interrupted)


def follow(client: Any, run_id: str, repository: str, timeout: float, ok: int, failed: int, interrupted: int) -> int:
    """Show the run as it goes, then its summary; fail it when nobody served it within `timeout` seconds."""
    from rivers.cli.main import display, make_console
    from rivers.distributed.runs import FINAL, fail_unserved, load_result, serving, unserved_message

    progress = RunProgress()
    progress.run_id = run_id
    console = make_console()
    feed = EventFeed(client, run_id, progress)
    submitted = time.monotonic()
    try:
        with display(console, progress):
            while True:
                feed.poll()
                status = (client.hget(keys.run_key(run_id), "status") or b"unknown").decode()
                if status in FINAL:
                    feed.poll()
                    break
                if (status == "queued" and time.monotonic() - submitted > timeout
                        and not serving(client, repository)):
                    fail_unserved(client, run_id, repository)
                    continue
                time.sleep(POLL_S)
    except KeyboardInterrupt:
        print_interrupted(console, progress)
        print(f"rivers: the run goes on on its coordinator; `rivers cancel {run_id}` stops it", file=sys.stderr)
        return interrupted
    result = load_result(client, run_id)
    error = client.hget(keys.run_key(run_id), "error")
    if progress.rows or not error:
        print_summary(console, progress, result)
    if error:
        message = error.decode()
        if message == unserved_message(repository) or not progress.rows:
            print(f"rivers: error: run {run_id} {status}: {message}", file=sys.stderr)
    return ok if status == "succeeded" else failed


class EventFeed:
    """Replays a run's events from Redis into a RunProgress, as the coordinator's listener would call it."""

    def __init__(self, client: Any, run_id: str, progress: RunProgress) -> None:
        self.client = client
        self.run_id = run_id
        self.progress = progress
        self.seen = 0
        self.steps: dict[str, PlannedStep] = {}

    def poll(self) -> None:
        items = self.client.lrange(keys.run_events_key(self.run_id), self.seen, -1)
        self.seen += len(items)
        for item in items:
            self.replay(json.loads(item))
        self.mark_running()

    def mark_running(self) -> None:
        """Steps handed to a worker are queued until a worker claims their job: then they are running."""
        queued = [key for key, row in list(self.progress.rows.items()) if row.status == "queued"]
        if not queued:
            return
        job_ids = self.client.hmget(keys.run_jobs_key(self.run_id), queued)
        pipe = self.client.pipeline(transaction=False)
        known = [(key, job_id.decode()) for key, job_id in zip(queued, job_ids, strict=True) if job_id]
        for _, job_id in known:
            pipe.hget(keys.job_key(job_id), keys.JOB_STATUS)
        for (key, _), status in zip(known, pipe.execute() if known else [], strict=True):
            if status == keys.STARTED.encode():
                self.progress.mark_running(key)

    def replay(self, entry: dict[str, Any]) -> None:
        event = entry.get("event")
        if event == "planned":
            for planned in entry.get("steps", []):
                step = PlannedStep(planned["key"], tuple(planned.get("outputs", ())),
                                   frozenset(planned.get("upstreams", ())), planned.get("executor", ""))
                self.steps[step.key] = step
                self.progress("planned", step, None)  # type: ignore[arg-type]
            return
        key = entry.get("step")
        if not key or not isinstance(event, str):
            return
        step = self.steps.get(key) or PlannedStep(key, (key,))
        result = None
        if event in ("succeeded", "failed"):
            stored = self.client.hget(keys.run_steps_key(self.run_id), key)
            result = StepResult.model_validate_json(stored) if stored else None
        self.progress(event, step, result)  # type: ignore[arg-type]


__all__ = ["EventFeed", "add_submit_arguments", "follow", "submit"]
