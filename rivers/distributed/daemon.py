"""rivers-coordinator: serve runs submitted through Redis; take over runs whose coordinator died.

    BLPOP rivers:submitted ─┐  every WATCH_INTERVAL_S: runs in rivers:runs:active whose owner lease is gone
                            ▼                                         │
                 SET rivers:run:<id>:owner NX PX ◄────────────────────┘  (only one coordinator wins)
                            ▼
       thread per run: plan -> Coordinator(seed = stored final results) -> queues (Redis)
            listener: events -> rivers:run:<id>:events, final results -> rivers:run:<id>:steps
            taken over: the steps' latest jobs still queued, running or reported are adopted, not re-sent
       heartbeat thread: renew the owner lease of every run this process owns
    run end: one MULTI: final record, done, SREM rivers:runs:active, every key of the run PEXPIREs
             RUN_RETENTION_S, runs index trimmed. Idle, a coordinator sends 2 commands a second.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from typing import Any

from rivers import defaults
from rivers.definitions.repository import CodeRepository
from rivers.distributed.connection import check_reachable, connect
from rivers.distributed.runs import FINAL, SubmittedRun, end_run, trim_index
from rivers.exceptions import ExecutionError
from rivers.logs import get_logger
from rivers.plan import Step
from rivers.queues import keys
from rivers.results import RunResult, StepResult
from rivers.run import execute_run


class _CancelledBeforeStart(ExecutionError):
    """RunHandle.cancel reached a run before any coordinator started it: it ends as cancelled, unrun."""


class CoordinatorDaemon:
    def __init__(self, url: str, repo: CodeRepository) -> None:
        self.url = url
        self.repo = repo
        self.name = f"coordinator-{uuid.uuid4().hex[:8]}"
        self.log = get_logger().bind(coordinator=self.name)
        self.client: Any = None
        self._owned: set[str] = set()
        self._queues: dict[str, list[Any]] = {}  # run id -> its step queues (to cancel it)
        self._lock = threading.Lock()
        self._stopping = False

    def serve(self) -> int:
        check_reachable(self.url)
        self.client = connect(self.url)
        self.repo.validate()
        trim_index(self.client)
        self._adopt_unlisted_runs()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: setattr(self, "_stopping", True))
        threading.Thread(target=self._heartbeat_loop, name="rivers-run-leases", daemon=True).start()
        self.log.info("coordinator.started")
        last_scan = 0.0
        while not self._stopping:
            try:
                popped = self.client.blpop([keys.SUBMITTED], timeout=defaults.WATCH_INTERVAL_S)
                if popped is not None:
                    self._try_start(popped[1].decode(), resumed=False)
                if time.monotonic() - last_scan >= defaults.WATCH_INTERVAL_S:
                    last_scan = time.monotonic()
                    self._take_over_orphans()
            except Exception as exc:  # noqa: BLE001 - Redis down past the retries: keep serving once it is back
                self.log.warning("coordinator.redis_error", error=repr(exc))
                time.sleep(defaults.REDIS_BACKOFF_CAP_S)
        while self._owned:  # SIGTERM: finish the runs this process owns
            time.sleep(0.1)
        return 0

    # -- owning runs ----------------------------------------------------------------------------
    def _try_start(self, run_id: str, resumed: bool) -> None:
        status = self.client.hget(keys.run_key(run_id), "status")
        if status not in (b"queued", b"running"):
            return
        if not self.client.set(keys.run_owner_key(run_id), self.name, nx=True, px=defaults.LEASE_MS):
            return  # another coordinator has it
        self.client.sadd(keys.RUNS_ACTIVE, run_id)  # already there, unless an older client submitted it
        with self._lock:
            self._owned.add(run_id)
        resumed = resumed or status == b"running"
        threading.Thread(target=self._execute, args=(run_id, resumed), name=f"rivers-run-{run_id[:8]}",
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
            pipe.hget(keys.run_key(run_id), "status")
        replies = pipe.execute()
        gone = []
        for run_id, owned, status in zip(others, replies[0::2], replies[1::2], strict=True):
            if status is None or status.decode() in FINAL:
                gone.append(run_id)  # expired, or ended by a coordinator of an older version
            elif not owned:
                self._try_start(run_id, resumed=True)
        if gone:
            self.client.srem(keys.RUNS_ACTIVE, *gone)

    def _adopt_unlisted_runs(self) -> None:
        """Once at start: runs in the index that have not ended but are not in the active set (submitted
        before it existed) join it, so that they are taken over too."""
        run_ids = [r.decode() for r in self.client.zrange(keys.RUNS, 0, -1)]
        for start in range(0, len(run_ids), 1000):
            chunk = run_ids[start:start + 1000]
            pipe = self.client.pipeline(transaction=False)
            for run_id in chunk:
                pipe.hget(keys.run_key(run_id), "status")
            live = [r for r, status in zip(chunk, pipe.execute(), strict=True)
                    if status is not None and status.decode() not in FINAL]
            if live:
                self.client.sadd(keys.RUNS_ACTIVE, *live)

    def _heartbeat_loop(self) -> None:
        while True:
            time.sleep(defaults.HEARTBEAT_S)
            with self._lock:
                owned = list(self._owned)
            if not owned:
                continue
            try:
                pipe = self.client.pipeline(transaction=False)
                for run_id in owned:
                    pipe.pexpire(keys.run_owner_key(run_id), defaults.LEASE_MS)
                    pipe.hget(keys.run_key(run_id), "cancel")
                replies = pipe.execute()
                for run_id, cancel in zip(owned, replies[1::2], strict=True):
                    if cancel:
                        self._cancel(run_id)
            except Exception as exc:  # noqa: BLE001 - Redis restarting: the next beat tries again
                self.log.warning("coordinator.heartbeat_failed", error=repr(exc))

    def _cancel(self, run_id: str) -> None:
        for queue in self._queues.get(run_id, []):
            hub = getattr(queue, "hub", None)
            if hub is not None:
                hub.fail_run(run_id, ExecutionError("the run was cancelled"))

    # -- one run ------------------------------------------------------------------------------------
    def _execute(self, run_id: str, resumed: bool) -> None:
        try:
            if self.client.hget(keys.run_key(run_id), "cancel"):
                raise _CancelledBeforeStart("the run was cancelled before it started")
            result = self._run(run_id, resumed)
            cancelled = self.client.hget(keys.run_key(run_id), "cancel")
            status = "cancelled" if cancelled else "succeeded" if result.success else "failed"
            record: dict[str, Any] = {"status": status,
                                      "result": json.dumps({"success": result.success,
                                                            "materialized_assets": result.materialized_assets,
                                                            "failed_assets": result.failed_assets})}
        except Exception as exc:  # noqa: BLE001 - a run that cannot start is a failed run, not a dead daemon
            cancelled = isinstance(exc, _CancelledBeforeStart)
            if not cancelled:
                self.log.error("run.failed_to_start", run_id=run_id, error=repr(exc))
            error = f"{'ExecutionError' if cancelled else type(exc).__name__}: {exc}"
            record = {"status": "cancelled" if cancelled else "failed", "error": error,
                      "result": json.dumps({"success": False, "materialized_assets": [],
                                            "failed_assets": [["<run>", error]]})}
        try:
            pipe = self.client.pipeline(transaction=True)
            end_run(pipe, run_id, record)
            pipe.execute()
        finally:  # not recorded (Redis gone past the retries): the lease expires and the run is taken over
            with self._lock:
                self._owned.discard(run_id)
                self._queues.pop(run_id, None)

    def _run(self, run_id: str, resumed: bool) -> RunResult:
        request = SubmittedRun.from_json(self.client.hget(keys.run_key(run_id), "request"))
        seed: dict[str, StepResult] = {}
        if resumed:
            seed = {k.decode(): StepResult.model_validate_json(v)
                    for k, v in self.client.hgetall(keys.run_steps_key(run_id)).items()}
        self.client.hset(keys.run_key(run_id), mapping={"status": "running", "owner": self.name,
                                                        "updated_at": time.time()})
        self.log.info("run.started", run_id=run_id, resumed=resumed, steps_done=len(seed))
        repo = self.repo
        run_request = repo._run_request(
            run_id=run_id, selection=request.selection, include_upstream=request.include_upstream,
            job=repo.get_job(request.job) if request.job else None, tags=request.tags, config=request.config,
            raise_on_error=False, retry=request.retry,
        )

        def adopt(queues: dict[str, Any]) -> None:
            """Cancel reaches these queues; a resumed run first adopts the jobs its dead owner had queued."""
            self._queues[run_id] = list(queues.values())
            if not resumed:
                return
            jobs = {k.decode(): v.decode() for k, v in self.client.hgetall(keys.run_jobs_key(run_id)).items()}
            for queue in queues.values():
                hub = getattr(queue, "hub", None)
                if hub is not None:
                    hub.expect(run_id, {k: v for k, v in jobs.items() if k not in seed})

        return execute_run(repo, repo._resolve(), run_request, seed=seed, listener=self._recorder(run_id),
                           on_queues=adopt)

    def _recorder(self, run_id: str) -> Any:
        def record(event: str, step: Step, result: StepResult | None) -> None:
            if event == "planned":
                return
            pipe = self.client.pipeline(transaction=False)
            entry: dict[str, Any] = {"event": event, "step": step.key, "time": time.time()}
            if result is not None:
                entry["attempt"] = result.attempt
                if result.error is not None:
                    entry["error"] = result.error.summary()
                pipe.hset(keys.run_steps_key(run_id), step.key, result.model_dump_json())
            pipe.rpush(keys.run_events_key(run_id), json.dumps(entry))
            pipe.execute()

        return record
