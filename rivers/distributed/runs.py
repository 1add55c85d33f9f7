"""Runs submitted to rivers-coordinator: their records in Redis, and the RunHandle users wait on.

A run record is a hash (status, request, result, owner); its steps' final results, the job id of each
step's latest attempt and its events live beside it (keys.py). The coordinator that owns a run holds a
lease on it; a run whose lease expired is taken over by another coordinator (daemon.py).

A run is for one repository (MODULE:ATTR, `normalise_target`): it is pushed on that repository's submitted list
and only coordinators serving it take it; each of them renews keys.serving_key(repository) with its heartbeat.
A run still queued after UNSERVED_TIMEOUT_S while no coordinator serves its repository ends failed, saying so
(`fail_unserved`: by `rivers submit --wait`, `RunHandle.wait`, or any coordinator's scan). A repository no module
holds (built in a function) cannot be named: its runs go to the shared list, as those of older clients do, and
any coordinator takes them.

Redis stays bounded: a run's id is in the active set (keys.RUNS_ACTIVE) from its submission to its end,
and its end (one MULTI with the final record) sets every key of the run to expire RUN_RETENTION_S later
and trims the runs index (keys.RUNS) of runs submitted longer ago than that.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from rivers import defaults
from rivers.distributed.connection import check_reachable, connect, redis_url
from rivers.exceptions import ConfigurationError, ExecutionError
from rivers.queues import keys
from rivers.results import RunResult, StepResult

if TYPE_CHECKING:
    from rivers.definitions.repository import CodeRepository

FINAL = ("succeeded", "failed", "cancelled")
# Flag a run as cancelled only while it has not ended: an HSET on an expired record would recreate it forever.
# KEYS: the run's hash. ARGV: the final statuses. -> the status it had, or nil for an unknown run.
_CANCEL = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return nil end
for _, final in ipairs(ARGV) do if status == final then return status end end
redis.call('HSET', KEYS[1], 'cancel', '1')
return status
"""


@dataclass
class SubmittedRun:
    """What `repo.submit(...)` asks for; the coordinator's repository decides the rest."""

    run_id: str
    selection: list[str] | None = None
    tags: Any = None
    config: dict[str, Any] | None = None
    include_upstream: bool = False
    retry: str | None = None
    job: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    repository: str | None = None  # MODULE:ATTR; None (an older client): any coordinator serves it

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> SubmittedRun:
        return cls(**json.loads(text))


def submit(request: SubmittedRun, url: str | None = None) -> RunHandle:
    """Record the run and wake a coordinator."""
    url = redis_url(url)
    if url is None:
        raise ConfigurationError(f"submitting a run needs {defaults.REDIS_URL_ENV} (the coordinator's Redis)")
    check_reachable(url)
    client = connect(url)
    now = time.time()
    record: dict[Any, Any] = {"status": "queued", "request": request.to_json(), "created_at": now, "updated_at": now}
    if request.repository:
        record[keys.RUN_REPOSITORY] = request.repository
    pipe = client.pipeline(transaction=True)
    pipe.hset(keys.run_key(request.run_id), mapping=record)
    pipe.zadd(keys.RUNS, {request.run_id: now})
    pipe.sadd(keys.RUNS_ACTIVE, request.run_id)
    pipe.rpush(keys.submitted_key(request.repository) if request.repository else keys.SUBMITTED, request.run_id)
    pipe.execute()
    return RunHandle(request.run_id, client)


def new_run_id() -> str:
    return str(uuid.uuid4())


# -- which repository a run is for ------------------------------------------------------------------
def normalise_target(target: str) -> str:
    """`shop` -> `shop:repo`, `shop:repo ` -> `shop:repo`: the name runs and coordinators are matched by."""
    module, _, attr = target.strip().partition(":")
    return f"{module.strip()}:{attr.strip() or 'repo'}"


def repository_of(target: str, repo: CodeRepository) -> str:
    """The repository name of a command-line target: MODULE:ATTR as given, normalised; a target given as a
    file path is named by the module it was imported as."""
    if "/" in target or target.partition(":")[0].endswith(".py"):
        return repository_name(repo) or normalise_target(target)
    return normalise_target(target)


def _holders(repo: CodeRepository) -> tuple[list[str], list[str]]:
    """MODULE:ATTR of the imported modules holding `repo`, in import order; and of a script run as __main__
    (named by its file)."""
    modules, scripts = [], []
    for name, module in list(sys.modules.items()):
        for attr, value in list(getattr(module, "__dict__", {}).items()):
            if value is not repo or attr.startswith("_"):
                continue
            if name != "__main__":
                modules.append(f"{name}:{attr}")
            elif file := getattr(module, "__file__", None):
                scripts.append(f"{str(file).rsplit('/', 1)[-1].removesuffix('.py')}:{attr}")
    return modules, scripts


def repository_names(repo: CodeRepository) -> list[str]:
    """Every name `repo` goes by here: a coordinator serves runs submitted under any of them."""
    modules, scripts = _holders(repo)
    return list(dict.fromkeys([*modules, *scripts]))


def repository_name(repo: CodeRepository) -> str | None:
    """The name `repo.submit()` records: the module imported last that holds it (the one defining it, rather than
    the modules that imported it from there); a script's file name only when no module holds it."""
    modules, scripts = _holders(repo)
    return modules[-1] if modules else scripts[0] if scripts else None


def unserved_message(repository: str) -> str:
    return f"no rivers-coordinator serves {repository}; start one with rivers-coordinator --repo {repository}"


def serving(client: Any, repository: str) -> bool:
    """Whether a live coordinator serves `repository` (its heartbeat renews the key)."""
    return bool(client.exists(keys.serving_key(repository)))


def fail_unserved(client: Any, run_id: str, repository: str) -> bool:
    """End a run still queued and unowned as failed because no coordinator serves its repository."""
    message = unserved_message(repository)
    return end_unserved(client, run_id, repository, {"status": "failed", "error": message,
                                                     "result": _no_result(message)})


def end_unserved(client: Any, run_id: str, repository: str, record: dict[str, Any]) -> bool:
    """End a run with `record` if it is still queued, unowned, and no coordinator serves its repository."""

    def end(pipe: Any) -> bool:
        status = pipe.hget(keys.run_key(run_id), "status")
        if status != b"queued" or pipe.exists(keys.run_owner_key(run_id)) or serving(pipe, repository):
            return False
        pipe.multi()
        end_run(pipe, run_id, record)
        return True

    return bool(client.transaction(end, keys.run_key(run_id), keys.run_owner_key(run_id),
                                   keys.serving_key(repository), value_from_callable=True))


def _no_result(error: str) -> str:
    return json.dumps({"success": False, "materialized_assets": [], "failed_assets": [["<run>", error]]})


def end_run(pipe: Any, run_id: str, record: dict[str, Any]) -> None:
    """Queue on `pipe` (a MULTI) the end of a run: its final record, the wake-up of `RunHandle.wait`, and
    what keeps Redis bounded (out of the active set, every key expiring, the index trimmed)."""
    now = time.time()
    pipe.hset(keys.run_key(run_id), mapping={"ended_at": now, **record, "updated_at": now})
    pipe.rpush(keys.run_done_key(run_id), "1")
    pipe.delete(keys.run_owner_key(run_id))
    pipe.srem(keys.RUNS_ACTIVE, run_id)
    retention_ms = max(1, int(defaults.RUN_RETENTION_S * 1000))
    for key in keys.run_keys(run_id):  # EXPIRE on a key the run did not create is a no-op
        pipe.pexpire(key, retention_ms)
    trim_index(pipe, now)


def trim_index(client: Any, now: float | None = None) -> None:
    """Drop from the runs index the runs submitted more than RUN_RETENTION_S ago (their keys expire)."""
    oldest = (time.time() if now is None else now) - defaults.RUN_RETENTION_S
    client.zremrangebyscore(keys.RUNS, "-inf", f"({oldest}")


class RunHandle:
    """A run submitted to the coordinator."""

    def __init__(self, run_id: str, client: Any) -> None:
        self.run_id = run_id
        self._client = client

    def __repr__(self) -> str:
        return f"RunHandle(run_id={self.run_id!r}, status={self.status!r})"

    @property
    def status(self) -> str:
        """queued | running | succeeded | failed | cancelled"""
        status = self._client.hget(keys.run_key(self.run_id), "status")
        return status.decode() if status else "unknown"

    def wait(self, timeout: float | None = None) -> RunResult:
        """Block until the run ends; TimeoutError after `timeout` seconds. A run that no coordinator serves ends
        failed after UNSERVED_TIMEOUT_S, naming the coordinator to start."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.status not in FINAL:
            self._fail_if_unserved()
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"run {self.run_id} did not finish within {timeout:g} s")
            block = defaults.WORKER_BLOCK_S if left is None else max(0.01, min(left, defaults.WORKER_BLOCK_S))
            self._client.blpop([keys.run_done_key(self.run_id)], timeout=block)
        return load_result(self._client, self.run_id)

    def _fail_if_unserved(self) -> None:
        """Queued longer than UNSERVED_TIMEOUT_S for a repository no coordinator serves: the run fails, saying so."""
        status, repository, created = self._client.hmget(keys.run_key(self.run_id), "status", keys.RUN_REPOSITORY,
                                                         "created_at")
        if status == b"queued" and repository and time.time() - float(created or 0) > defaults.UNSERVED_TIMEOUT_S:
            fail_unserved(self._client, self.run_id, repository.decode())

    def cancel(self) -> None:
        """Ask the coordinator to stop the run: nothing new starts, running steps fail as cancelled.

        A run that already ended, or whose record expired, is left as it is.
        """
        cancel_run(self._client, self.run_id)


def cancel_run(client: Any, run_id: str) -> str | None:
    """Flag a run cancelled; its status before (a final one: nothing was done), or None for an unknown run.

    The coordinator running it withdraws its queued steps, dispatches nothing more and ends it cancelled; one
    that takes it later ends it cancelled without running a step.
    """
    before = client.eval(_CANCEL, 1, keys.run_key(run_id), *FINAL)
    return None if before is None else str(before.decode())


def end_cancelled(client: Any, run_id: str) -> bool:
    """End a cancelled run at once when no coordinator serves its repository to do it (it was never started)."""
    repository = client.hget(keys.run_key(run_id), keys.RUN_REPOSITORY)
    if repository is None:
        return False  # submitted by an older client: any coordinator may take it, and ends it
    error = "cancelled before any rivers-coordinator started it"
    return end_unserved(client, run_id, repository.decode(), {"status": "cancelled", "error": error,
                                                              "result": _no_result(error)})


def load_result(client: Any, run_id: str) -> RunResult:
    record = client.hgetall(keys.run_key(run_id))
    if b"result" not in record:
        raise ExecutionError(f"run {run_id} has no result: {record.get(b'status', b'unknown').decode()}")
    data = json.loads(record[b"result"])
    steps = {key.decode(): StepResult.model_validate_json(value)
             for key, value in client.hgetall(keys.run_steps_key(run_id)).items()}
    return RunResult(success=data["success"], run_id=run_id, materialized_assets=data["materialized_assets"],
                     failed_assets=[tuple(item) for item in data["failed_assets"]], step_results=steps)


def events(client: Any, run_id: str) -> list[dict[str, Any]]:
    return [json.loads(item) for item in client.lrange(keys.run_events_key(run_id), 0, -1)]
