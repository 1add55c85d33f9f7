"""The batch/v1 Job controller: one pod per Job at a time, its end mirrored into the Job status."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from copy import deepcopy
from typing import TYPE_CHECKING

from tests.kubernetes.fake.objects import ApiError, Obj, now, set_condition
from tests.kubernetes.fake.store import Event, Store

if TYPE_CHECKING:
    from tests.kubernetes.fake.apiserver import Api


class JobController:
    """One pod per Job at a time, from its template (labels job-name / controller-uid, ownerReferences); a pod's
    end is counted once into status.succeeded / status.failed; Complete, or Failed (BackoffLimitExceeded) once
    failed > backoffLimit, else a replacement pod; a pod deleted before it ended counts as failed.
    ttlSecondsAfterFinished deletes the finished Job (Background)."""

    def __init__(self, store: Store, api: Api) -> None:
        self.store, self.api = store, api
        self.errors: list[BaseException] = []
        self._events: queue.Queue[Event] = queue.Queue()
        self._counted: dict[str, dict[str, str]] = {}  # job uid -> pod uid -> "succeeded" | "failed"
        self._timers: dict[str, threading.Timer] = {}
        self._busy = threading.Lock()
        self._paused = False
        store.subscribers.append(lambda e: self._events.put(e) if e.resource in ("jobs", "pods") else None)
        threading.Thread(target=self._loop, daemon=True, name="job-controller").start()

    def _loop(self) -> None:
        while True:
            event = self._events.get()
            try:
                with self._busy:
                    if not self._paused:
                        self._handle(event)
            except Exception as exc:  # noqa: BLE001 - a daemon thread: keep it for the teardown assertion
                self.errors.append(exc)
            finally:
                self._events.task_done()

    def pause(self) -> None:
        with self._busy:
            self._paused = True
        for timer in self._timers.values():
            timer.cancel()

    def resume(self) -> None:
        self._events.join()
        self._counted.clear()
        self._timers.clear()
        self._paused = False

    def _handle(self, event: Event) -> None:
        meta = event.obj["metadata"]
        if event.resource == "jobs":
            if event.type == "ADDED":
                self._start(event.obj)
            elif event.type == "DELETED" and (timer := self._timers.pop(meta["uid"], None)):
                timer.cancel()
            return
        owner = next((o for o in meta.get("ownerReferences") or [] if o.get("controller")), None)
        phase = event.obj["status"]["phase"]
        outcome = {"Succeeded": "succeeded", "Failed": "failed"}.get(phase)
        if event.type == "DELETED" and outcome is None:
            outcome = "failed"
        if owner is not None and owner["kind"] == "Job" and outcome is not None:
            self._pod_ended(meta["namespace"], owner, meta["uid"], outcome)

    def _job(self, ns: str, name: str, uid: str) -> Obj | None:
        with contextlib.suppress(ApiError):
            job = self.store.get("jobs", ns, name)
            if job["metadata"]["uid"] == uid:
                return job
        return None

    def _start(self, job: Obj) -> None:
        meta = job["metadata"]
        if self._job(meta["namespace"], meta["name"], meta["uid"]) is None or job["spec"].get("suspend"):
            return
        self._create_pod(job)
        self._set_status(job, lambda s: s.update(startTime=now(), active=1, ready=0, terminating=0,
                                                 uncountedTerminatedPods={}))

    def _create_pod(self, job: Obj) -> None:
        meta, template = job["metadata"], job["spec"]["template"]
        owner = {"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"], "uid": meta["uid"],
                 "controller": True, "blockOwnerDeletion": True}
        pod_meta = {"generateName": f"{meta['name']}-", "labels": dict(template["metadata"]["labels"]),
                    "ownerReferences": [owner]}
        if template["metadata"].get("annotations"):
            pod_meta["annotations"] = dict(template["metadata"]["annotations"])
        self.api.create("pods", meta["namespace"], {"metadata": pod_meta, "spec": deepcopy(template["spec"])})

    def _pod_ended(self, ns: str, owner: Obj, pod_uid: str, outcome: str) -> None:
        job = self._job(ns, owner["name"], owner["uid"])
        if job is None or _job_finished(job) or pod_uid in self._counted.setdefault(owner["uid"], {}):
            return
        counted = self._counted[owner["uid"]]
        counted[pod_uid] = outcome
        succeeded = sum(o == "succeeded" for o in counted.values())
        failed = len(counted) - succeeded
        if succeeded:
            self._set_status(job, lambda s: _finish_job(s, "Complete", succeeded=succeeded, failed=failed))
        elif failed > job["spec"]["backoffLimit"]:
            self._set_status(job, lambda s: _finish_job(s, "Failed", succeeded=0, failed=failed))
        else:
            self._set_status(job, lambda s: s.update(failed=failed))
            if not job["metadata"].get("deletionTimestamp"):
                self._create_pod(job)
            return
        ttl = job["spec"].get("ttlSecondsAfterFinished")
        if ttl is not None:
            timer = threading.Timer(ttl, self._expire, (ns, owner["name"], owner["uid"]))
            timer.daemon = True
            self._timers[owner["uid"]] = timer
            timer.start()

    def _set_status(self, job: Obj, mutate: Callable[[Obj], None]) -> None:
        meta = job["metadata"]

        def guarded(obj: Obj) -> None:
            if obj["metadata"]["uid"] == meta["uid"]:
                mutate(obj.setdefault("status", {}))
        with contextlib.suppress(ApiError):
            self.store.update("jobs", meta["namespace"], meta["name"], guarded)

    def _expire(self, ns: str, name: str, uid: str) -> None:
        if self._job(ns, name, uid) is not None:
            with contextlib.suppress(ApiError):
                self.api.delete("jobs", ns, name, {"propagationPolicy": "Background"})


def _job_finished(job: Obj) -> bool:
    return any(c["type"] in ("Complete", "Failed") and c["status"] == "True"
               for c in job.get("status", {}).get("conditions") or [])


def _finish_job(status: Obj, outcome: str, *, succeeded: int, failed: int) -> None:
    if outcome == "Complete":
        reason, message, first = "CompletionsReached", "Reached expected number of succeeded pods", \
            "SuccessCriteriaMet"
        status["completionTime"] = now()
    else:
        reason, message, first = "BackoffLimitExceeded", "Job has reached the specified backoff limit", \
            "FailureTarget"
    status.update(active=0, ready=0, terminating=0)
    status.update({k: v for k, v in (("succeeded", succeeded), ("failed", failed)) if v})
    for type_ in (first, outcome):
        set_condition(status, type_, "True", reason, message)
