"""rivers-coordinator: serve runs submitted through Redis; take over runs whose coordinator died.

    BLPOP rivers:submitted:<repo> ─┐  every WATCH_INTERVAL_S: runs in rivers:runs:active whose owner lease is gone
                            ▼                                         │
                 SET rivers:run:<id>:owner NX PX ◄────────────────────┘  (only one coordinator wins)
                            ▼
       thread per run: plan -> Coordinator(seed = stored final results) -> queues (Redis)
            listener: events -> rivers:run:<id>:events, final results -> rivers:run:<id>:steps
            taken over: the steps' latest jobs still queued, running or reported are adopted, not re-sent
       heartbeat thread: renew the owner lease of every run this process owns (ownership.py), and
                         SET rivers:serving:<repo> PX: `rivers submit` can tell a run nobody serves
    cancel: flagged on the run's hash; its queued steps are withdrawn, nothing more is dispatched (every
            step put after that fails at once, reason `cancelled`), the run ends `cancelled`
    run end: one MULTI: final record, done, SREM rivers:runs:active, every key of the run PEXPIREs
             RUN_RETENTION_S, runs index trimmed. Idle, a coordinator sends 2 commands a second.

Ownership is fenced (ownership.py): taking a run increments its token, and every write this process makes
for a run (dispatching steps, recording events and results, ending it) is refused once the token has moved
on. A coordinator paused past its lease therefore stands down (`run.stood_down`) the moment it notices,
writing nothing, and goes on serving its other runs.

A coordinator serves only runs of its own repository (MODULE:ATTR); a run an older client submitted without
one goes to any coordinator.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from rivers import defaults
from rivers.coordinator.coordinator import Coordinator
from rivers.definitions.repository import CodeRepository
from rivers.distributed.connection import check_reachable, connect
from rivers.distributed.history import EMBEDDED, Tally, keep_attempt, planned_entry, step_entry, worker_of
from rivers.distributed.ownership import Ownership
from rivers.distributed.runs import (
    FINAL,
    SubmittedRun,
    end_run,
    fail_unserved,
    repository_names,
    serving,
    trim_index,
)
from rivers.exceptions import ExecutionError, FencedOut
from rivers.logs import get_logger
from rivers.plan import Step
from rivers.queues import keys
from rivers.queues.base import StepQueue, StepRequest
from rivers.results import RunResult, StepResult
from rivers.run import execute_run
from rivers.runtime import StepCall


class _CancelledBeforeStart(ExecutionError):
    """RunHandle.cancel reached a run before any coordinator started it: it ends as cancelled, unrun."""


class CoordinatorDaemon:
    def __init__(self, url: str, repo: CodeRepository, repository: str) -> None:
        self.url = url
        self.repo = repo
        self.repository = repository  # MODULE:ATTR, normalised: the runs this process serves
        self.repositories = list(dict.fromkeys([repository, *repository_names(repo)]))  # and its other names
        self.name = f"coordinator-{uuid.uuid4().hex[:8]}"
        self.log = get_logger().bind(coordinator=self.name, repository=repository)
        self._cancelled: set[str] = set()
        self._tallies: dict[str, Tally] = {}
        self.client: Any = None
        self.ownership: Ownership | None = None
        self._owned: dict[str, int] = {}  # run id -> the ownership token this process drives it with
        self._queues: dict[str, list[Any]] = {}  # run id -> its step queues (to cancel it)
        self._coordinators: dict[str, Coordinator] = {}
        self._lock = threading.Lock()
        self._stopping = False

    def serve(self) -> int:
        check_reachable(self.url)
        self.client = connect(self.url)
        self.ownership = Ownership(self.client, self.name)
        self.repo.validate()
        trim_index(self.client)
        self._adopt_unlisted_runs()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: setattr(self, "_stopping", True))
        self._advertise()
        threading.Thread(target=self._heartbeat_loop, name="rivers-run-leases", daemon=True).start()
        self.log.info("coordinator.started", serves=self.repositories)
        last_scan = 0.0
        inboxes = [*map(keys.submitted_key, self.repositories), keys.SUBMITTED]
        while not self._stopping:
            try:
                popped = self.client.blpop(inboxes, timeout=defaults.WATCH_INTERVAL_S)
                if popped is not None:
                    self._try_start(popped[1].decode(), resumed=False)
                if time.monotonic() - last_scan >= defaults.WATCH_INTERVAL_S:
                    last_scan = time.monotonic()
                    self._take_over_orphans()
            except Exception as exc:  # noqa: BLE001 - Redis down past the retries: keep serving once it is back
                self.log.warning("coordinator.redis_error", error=repr(exc))
                time.sleep(defaults.REDIS_BACKOFF_CAP_S)
        self._withdraw_advertisement()
        while self._owned:  # SIGTERM: finish the runs this process owns
            time.sleep(0.1)
        return 0

    def _advertise(self) -> None:
        """This process serves its repository (for `rivers submit`'s check), for LEASE_MS unless renewed."""
        pipe = self.client.pipeline(transaction=False)
        for repository in self.repositories:
            pipe.set(keys.serving_key(repository), self.name, px=defaults.LEASE_MS)
        pipe.execute()

    def _withdraw_advertisement(self) -> None:
        try:  # only our own advertisement: another coordinator of this repository may have renewed it since
            for repository in self.repositories:
                if self.client.get(keys.serving_key(repository)) == self.name.encode():
                    self.client.delete(keys.serving_key(repository))
        except Exception:  # noqa: BLE001 - Redis gone: the key expires by itself
            pass

    def _serves(self, repository: bytes | None) -> bool:
        return repository is None or repository.decode() in self.repositories

    # -- owning runs ----------------------------------------------------------------------------
    def _try_start(self, run_id: str, resumed: bool) -> None:
        status, repository, kind = self.client.hmget(keys.run_key(run_id), "status", keys.RUN_REPOSITORY,
                                                     keys.RUN_KIND)
        if status not in (b"queued", b"running") or kind == EMBEDDED.encode() or not self._serves(repository):
            return
        assert self.ownership is not None
        token = self.ownership.take(run_id)
        if token is None:
            return  # another coordinator has it
        self.client.sadd(keys.RUNS_ACTIVE, run_id)  # already there, unless an older client submitted it
        with self._lock:
            self._owned[run_id] = token
        resumed = resumed or status == b"running"
        threading.Thread(target=self._execute, args=(run_id, token, resumed), name=f"rivers-run-{run_id[:8]}",
                         daemon=True).start()

    def _take_over_orphans(self) -> None:
        """Runs not ended whose owner lease is gone; the scan costs one SMEMBERS plus one round trip
        per active run owned elsewhere, however many ended runs Redis still keeps."""
        active = [r.decode() for r in self.client.smembers(keys.RUNS_ACTIVE)]
        with self._lock:
            others = [run_id for run_id in active if run_id not in self._owned]
        if not others:
            return
        pipe = self.client.pipeline(transaction=False)
        for run_id in others:
            pipe.exists(keys.run_owner_key(run_id))
            pipe.hmget(keys.run_key(run_id), "status", keys.RUN_REPOSITORY, "created_at")
        replies = pipe.execute()
        gone = []
        for run_id, owned, (status, repository, created) in zip(others, replies[0::2], replies[1::2], strict=True):
            if status is None or status.decode() in FINAL:
                gone.append(run_id)  # expired, or ended by a coordinator of an older version
            elif owned:
                continue
            elif self._serves(repository):
                self._try_start(run_id, resumed=True)
            elif status == b"queued" and time.time() - float(created or 0) > defaults.UNSERVED_TIMEOUT_S:
                self._fail_if_unserved(run_id, repository.decode())
        if gone:
            self.client.srem(keys.RUNS_ACTIVE, *gone)

    def _fail_if_unserved(self, run_id: str, repository: str) -> None:
        """A run of another repository waited UNSERVED_TIMEOUT_S and no coordinator serves it: say so."""
        if not serving(self.client, repository) and fail_unserved(self.client, run_id, repository):
            self.log.warning("run.unserved", run_id=run_id, run_repository=repository,
                             timeout_s=defaults.UNSERVED_TIMEOUT_S)

    def _adopt_unlisted_runs(self) -> None:
        """Once at start: runs in the index that have not ended but are not in the active set (submitted
        before it existed) join it, so that they are taken over too."""
        run_ids = [r.decode() for r in self.client.zrange(keys.RUNS, 0, -1)]
        for start in range(0, len(run_ids), 1000):
            chunk = run_ids[start:start + 1000]
            pipe = self.client.pipeline(transaction=False)
            for run_id in chunk:
                pipe.hmget(keys.run_key(run_id), "status", keys.RUN_KIND)
            live = [r for r, (status, kind) in zip(chunk, pipe.execute(), strict=True)
                    if status is not None and status.decode() not in FINAL and kind != EMBEDDED.encode()]
            if live:
                self.client.sadd(keys.RUNS_ACTIVE, *live)

    def _heartbeat_loop(self) -> None:
        while True:
            time.sleep(defaults.HEARTBEAT_S)
            with self._lock:
                owned = dict(self._owned)
            try:
                if not self._stopping:
                    self._advertise()
                if not owned:
                    continue
                assert self.ownership is not None
                lost = set(self.ownership.renew(owned))
                for run_id in lost:
                    self._stand_down(run_id)
                held = [run_id for run_id in owned if run_id not in lost]
                pipe = self.client.pipeline(transaction=False)
                for run_id in held:
                    pipe.hget(keys.run_key(run_id), "cancel")
                for run_id, cancel in zip(held, pipe.execute(), strict=True):
                    if cancel:
                        self._cancel(run_id)
            except Exception as exc:  # noqa: BLE001 - Redis restarting: the next beat tries again
                self.log.warning("coordinator.heartbeat_failed", error=repr(exc))

    def _stand_down(self, run_id: str) -> None:
        """Another coordinator owns the run now: stop driving it (its thread raises FencedOut)."""
        coordinator = self._coordinators.get(run_id)
        if coordinator is not None:
            coordinator.stand_down()

    def _cancel(self, run_id: str) -> None:
        """Once: nothing more is dispatched (the queues fail every new step), queued and running steps fail."""
        if run_id in self._cancelled:
            return
        self._cancelled.add(run_id)
        self.log.info("run.cancelling", run_id=run_id)
        for queue in self._queues.get(run_id, []):
            hub = getattr(queue, "hub", None)
            if hub is not None:
                hub.fail_run(run_id, ExecutionError("the run was cancelled"))

    # -- one run ------------------------------------------------------------------------------------
    def _execute(self, run_id: str, token: int, resumed: bool) -> None:
        try:
            record = self._outcome(run_id, token, resumed)
            self._end(run_id, token, record)
        except FencedOut:
            self.log.warning("run.stood_down", run_id=run_id, token=token,
                             reason="another coordinator took the run over while this one was paused or cut off")
            for queue in self._queues.get(run_id, []):
                hub = getattr(queue, "hub", None)
                if hub is not None:
                    hub.forget_run(run_id)
        finally:  # not recorded (Redis gone past the retries): the lease expires and the run is taken over
            with self._lock:
                self._owned.pop(run_id, None)
                self._queues.pop(run_id, None)
                self._coordinators.pop(run_id, None)
                self._tallies.pop(run_id, None)
            self._cancelled.discard(run_id)

    def _outcome(self, run_id: str, token: int, resumed: bool) -> dict[str, Any]:
        """The final record of a run: run it, or say why it could not run."""
        try:
            if self.client.hget(keys.run_key(run_id), "cancel"):
                raise _CancelledBeforeStart("the run was cancelled before it started")
            self.client.hsetnx(keys.run_key(run_id), "started_at", time.time())
            result = self._run(run_id, token, resumed)
            cancelled = self.client.hget(keys.run_key(run_id), "cancel")
            status = "cancelled" if cancelled else "succeeded" if result.success else "failed"
            record = {"status": status, "result": json.dumps({"success": result.success,
                                                              "materialized_assets": result.materialized_assets,
                                                              "failed_assets": result.failed_assets})}
            if cancelled:
                record["error"] = "cancelled (rivers cancel)"
            tally = self._tallies.get(run_id)
            if tally is not None and not resumed:  # a resumed run's events began before this process
                record["counts"] = json.dumps(tally.counts())
            return record
        except Exception as exc:  # noqa: BLE001 - a run that cannot start is a failed run, not a dead daemon
            cancelled = isinstance(exc, _CancelledBeforeStart)
            if not cancelled:
                self.log.error("run.failed_to_start", run_id=run_id, error=repr(exc))
            error = f"{'ExecutionError' if cancelled else type(exc).__name__}: {exc}"
            return {"status": "cancelled" if cancelled else "failed", "error": error,
                    "result": json.dumps({"success": False, "materialized_assets": [],
                                          "failed_assets": [["<run>", error]]})}

    def _end(self, run_id: str, token: int, record: dict[str, Any]) -> None:
        """Record the run's end, only while this process still owns it (the run's hash WATCHed)."""
        assert self.ownership is not None
        ownership = self.ownership

        def end(pipe: Any) -> None:
            if not ownership.holds(pipe, run_id, token):
                raise FencedOut(f"run {run_id} is owned by another coordinator now")
            pipe.multi()
            end_run(pipe, run_id, record)

        self.client.transaction(end, keys.run_key(run_id))

    def _run(self, run_id: str, token: int, resumed: bool) -> RunResult:
        request = SubmittedRun.from_json(self.client.hget(keys.run_key(run_id), "request"))
        seed: dict[str, StepResult] = {}
        if resumed:
            seed = {k.decode(): StepResult.model_validate_json(v)
                    for k, v in self.client.hgetall(keys.run_steps_key(run_id)).items()}
        self.log.info("run.started", run_id=run_id, resumed=resumed, steps_done=len(seed), token=token)
        repo = self.repo
        run_request = repo._run_request(
            run_id=run_id, selection=request.selection, include_upstream=request.include_upstream,
            job=repo.get_job(request.job) if request.job else None, tags=request.tags, config=request.config,
            raise_on_error=False, retry=request.retry,
        )

        def adopt(coordinator: Coordinator) -> None:
            """Cancel and fencing reach this run's coordinator and queues; a resumed run first adopts the jobs
            its previous owner had sent."""
            self._coordinators[run_id] = coordinator
            self._queues[run_id] = list(coordinator.queues.values())
            coordinator.queues = {name: _Cancellable(queue, run_id, self._cancelled, recorder.attempt_failed)
                                  for name, queue in coordinator.queues.items()}
            jobs = {k.decode(): v.decode() for k, v in self.client.hgetall(keys.run_jobs_key(run_id)).items()} \
                if resumed else {}
            for queue in coordinator.queues.values():
                hub = getattr(queue, "hub", None)
                if hub is not None:
                    hub.fence(run_id, token, coordinator.stand_down)
                    if resumed:
                        hub.expect(run_id, {k: v for k, v in jobs.items() if k not in seed})

        recorder = _Recorder(self, run_id, token)
        return execute_run(repo, repo._resolve(), run_request, seed=seed, listener=recorder, on_coordinator=adopt)



class _Recorder:
    """A run's listener: its step events and final results go to Redis, fenced by the run's token."""

    def __init__(self, daemon: CoordinatorDaemon, run_id: str, token: int) -> None:
        assert daemon.ownership is not None
        self.ownership = daemon.ownership
        self.client = daemon.client
        self.name = daemon.name
        self.run_id = run_id
        self.token = token
        self.tally = daemon._tallies[run_id] = Tally()
        self.planned: list[Step] = []

    def write(self, entry: dict[str, Any], step_key: str, result_json: str) -> None:
        self.tally.add(entry)
        if not self.ownership.record(self.run_id, self.token, json.dumps(entry), step_key, result_json):
            raise FencedOut(f"run {self.run_id} is owned by another coordinator now")

    def __call__(self, event: str, step: Step, result: StepResult | None) -> None:
        if event == "attempt_failed":
            return  # written as it was reported (attempt_failed), retried or not
        if event == "planned":  # the plan is written once, with the first step that moves
            self.planned.append(step)
            return
        if self.planned:
            self.write(planned_entry(self.planned), "", "")
            self.planned.clear()
        result_json = result.model_dump_json() if result is not None else ""
        self.write(step_entry(event, step, result, self.worker(step, result)), step.key, result_json)

    def worker(self, step: Step, result: StepResult | None) -> str | None:
        if result is None:
            return None
        return worker_of(self.client, self.run_id, step.key) or f"{self.name} (in process)"

    def attempt_failed(self, step: Step, result: StepResult) -> None:
        """Every failed attempt, retried or not, as it is reported (`rivers run` lists them per step)."""
        try:
            self.write(step_entry("attempt_failed", step, result, self.worker(step, result)), "", "")
            if result.logs:  # `rivers logs` shows every attempt's lines
                keep_attempt(self.client, result)
        except FencedOut:
            pass  # the run's own thread stands down when it next writes
        except Exception as exc:  # noqa: BLE001 - a lost history line must not lose the report itself
            get_logger().warning("run.record_failed", run_id=self.run_id, error=repr(exc))


class _Cancellable:
    """A run's step queue that, once the run is cancelled, fails every step put on it (reason `cancelled`)
    and marks the failures its steps report meanwhile as cancelled too (never retried: RunState)."""

    def __init__(self, queue: StepQueue, run_id: str, cancelled: set[str],
                 on_failed: Callable[[Step, StepResult], None]) -> None:
        self.queue = queue
        self.on_failed = on_failed
        self.executor = queue.executor
        self.run_id = run_id
        self.cancelled = cancelled
        self.hub = getattr(queue, "hub", None)

    def prepare(self, call: StepCall) -> None:
        if self.run_id not in self.cancelled:
            self.queue.prepare(call)

    def arm(self, call: StepCall, upstream: tuple[str, int]) -> bool:
        return self.run_id not in self.cancelled and self.queue.arm(call, upstream)

    def disarm(self, call: StepCall) -> None:
        self.queue.disarm(call)

    def put(self, request: StepRequest) -> None:
        if self.run_id in self.cancelled:
            call = request.call
            request.report(StepResult.failed(call.run_id, call.step_key, call.attempt,
                                             [slot.name for slot in call.outputs],
                                             ExecutionError("the run was cancelled"), reason="cancelled"))
            return
        report = request.report

        def reported(result: StepResult) -> None:
            if result.status == "failed" and result.error is not None and self.run_id in self.cancelled:
                error = result.error.model_copy(update={"reason": "cancelled"})
                result = result.model_copy(update={"error": error}).with_exception(result.exception)
            if result.status == "failed":
                self.on_failed(request.step, result)
            report(result)

        self.queue.put(StepRequest(request.step, request.call, reported, request.running))

    def flush(self) -> None:
        self.queue.flush()

    def cancel_run(self, run_id: str) -> None:
        self.queue.cancel_run(run_id)
