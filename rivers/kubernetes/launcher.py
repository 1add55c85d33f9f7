"""The pod launcher, `rivers-worker --executor kubernetes`: one batch/v1 Job per step attempt, followed to its end.

    BLMPOP rq:queue:rivers:kubernetes (up to the free places)
        ──> CLAIM (leases.py): lease = this launcher, job started, `rivers_launcher` = this launcher, id in LAUNCHED
        ──> decode_job: signature (RIVERS_SECRET) over the exact bytes, bounded decompression; the spec's header
              and pod request are read as JSON, nothing is imported
        ──> create the Job (manifests.py); 409: a Job of that name is this very attempt: followed, not doubled
    heartbeat thread, every HEARTBEAT_S: alive key; renew the leases still ours (RENEW: a pod that took its step
        over holds its own); pods not running after --start-timeout fail ("pod never started: <reason>");
        ADOPT the jobs of launchers that died (their Jobs are followed, or created if they never were)
    a watch per namespace on step pods (list, then watch from its resourceVersion; 410 Expired: list again):
        Succeeded ──> the pod reported; its Job is deleted at once
        Failed / deleted ──> if the step is still unreported, REPORT what happened (OOMKilled -> out_of_memory,
              exit code / signal, deleted) with the pod's last log lines; failed Jobs stay until their TTL
    SIGTERM once: take nothing new, hand back the steps no pod has taken over, follow the others to their end;
    twice: leave at once (another launcher adopts what this one followed)

The launcher never imports user code and never runs a step: it creates Jobs and reports what pods cannot.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from pydantic import ValidationError

from rivers import defaults, signing
from rivers.distributed.connection import check_reachable, connect
from rivers.distributed.jobs import StepJob, decode_job, encode_report
from rivers.distributed.worker import RELEASE_SCRIPT, Presence, announce, on_stop_signals
from rivers.exceptions import ConfigurationError, ExecutionError, OutOfMemory, PodFailed, RefusedJob
from rivers.kubernetes import leases
from rivers.kubernetes.cluster import NO_IMAGE, Cluster, connect_cluster, default_image
from rivers.kubernetes.manifests import (
    ATTEMPT_LABEL,
    CONTAINER,
    JOB_ID_ANNOTATION,
    RUN_ID_LABEL,
    STEP_PODS,
    StepAttempt,
    job_manifest,
    job_name,
    label_value,
)
from rivers.kubernetes.pod_request import PodRequest
from rivers.logs import get_logger
from rivers.queues import keys, rq_view
from rivers.results import StepResult
from rivers.spec import SpecHeader

EXECUTOR = "kubernetes"
# launcher -> pods: a pod renews its step's lease as long as its launcher's, and waits for Redis as long
PASSED_ENV = (defaults.LOG_LEVEL_ENV, defaults.LOG_FORMAT_ENV, "RIVERS_MAX_PAYLOAD_BYTES", defaults.LEASE_ENV,
              defaults.REDIS_RETRIES_ENV)


class LaunchHeader(SpecHeader):
    """What the launcher reads of a spec: the step's identity and the pod it asks for."""

    pod: PodRequest | None = None


@dataclass
class Followed:
    """A step attempt whose Job this launcher created (or adopted) and whose pod it follows."""

    job: StepJob
    header: LaunchHeader
    namespace: str
    name: str  # the Job's
    since: float  # monotonic: when the Job was created or adopted
    memory: str
    holding: bool = True  # the lease is this launcher's: no pod has taken the step over yet
    pod: str | None = None
    started: bool = False  # its pod has been seen running
    waiting: str = ""  # why its pod is not running yet
    ended: tuple[BaseException | None, str, bool] | None = None  # its end, not yet told to Redis (unreachable)


class Launcher:
    """One pod launcher process."""

    def __init__(self, url: str, *, namespace: str | None = None, kubeconfig: str | None = None,
                 max_pods: int | None = None, start_timeout: float | None = None,
                 redis_secret: str = "rivers-redis", burst: bool = False) -> None:
        self.url = url
        self.namespace = namespace
        self.kubeconfig = kubeconfig
        self.max_pods = max_pods or defaults.LAUNCHER_MAX_PODS
        self.start_timeout = defaults.POD_START_TIMEOUT_S if start_timeout is None else start_timeout
        self.redis_secret = redis_secret
        self.burst = burst
        self.queue = keys.queue_name(EXECUTOR)
        self.name = f"launcher.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
        self.log = get_logger().bind(launcher=self.name)
        self.key = signing.deployment_key()
        self.pod_env = {name: os.environ[name] for name in PASSED_ENV if os.environ.get(name)}
        self.client: Any = None
        self.cluster: Cluster | None = None
        self.image: str | None = None
        self._scripts: dict[str, Any] = {}
        self._cond = threading.Condition()
        self._followed: dict[str, Followed] = {}  # job id -> its attempt
        self._watched: set[str] = set()  # namespaces with a pod watch
        self._stopping = False
        self._leaving = False  # second SIGTERM
        self._done = threading.Event()
        self.birth = datetime.now(UTC)
        self.presence = Presence(url, self.name, EXECUTOR)

    # -- lifecycle ---------------------------------------------------------------------------
    def run(self) -> int:
        check_reachable(self.url)
        self.client = connect(self.url)
        self.cluster = connect_cluster(self.kubeconfig, self.namespace)
        self.image = default_image(self.cluster)
        for name in ("CLAIM", "RENEW", "REPORT", "RELEASE", "ADOPT"):
            self._scripts[name] = self.client.register_script(getattr(leases, name))
        self._refuse = self.client.register_script(RELEASE_SCRIPT)
        self._install_signals()
        self._watch(self.cluster.namespace)
        self._beat()
        threading.Thread(target=self._heartbeat_loop, name="rivers-heartbeat", daemon=True).start()
        self.log.info("launcher.started", namespace=self.cluster.namespace, image=self.image, max_pods=self.max_pods,
                      start_timeout_s=self.start_timeout)
        try:
            self._consume()
            self._drain()
        finally:
            self._finish()
        return 0

    def _install_signals(self) -> None:
        on_stop_signals(self._on_signal)

    def _on_signal(self) -> None:
        self._leaving = self._stopping
        self._stopping = True

    def stop(self) -> None:
        self._stopping = True

    def _consume(self) -> None:
        queue_key = keys.queue_key(EXECUTOR)
        while not self._stopping:
            with self._cond:
                while len(self._followed) >= self.max_pods and not self._stopping:
                    self._cond.wait(0.5)
                free = self.max_pods - len(self._followed)
            if self._stopping:
                return
            try:
                popped = self.client.blmpop(defaults.WORKER_BLOCK_S, 1, queue_key, direction="LEFT", count=free)
                if not popped:
                    with self._cond:
                        if self.burst and not self._followed:
                            return
                    continue
                ids = [job_id.decode() for job_id in popped[1]]
                claimed = self._scripts["CLAIM"](args=[self.name, defaults.LEASE_MS, rq_view.rq_time(), time.time(),
                                                       self.queue, *ids])
            except redis.RedisError as exc:  # past the connection's retries: keep following pods, try again
                self.log.warning("launcher.redis_unreachable", error=repr(exc))
                self._done.wait(1.0)
                continue
            for index in range(0, len(claimed), 3):
                self._launch(claimed[index].decode(), claimed[index + 1], claimed[index + 2] or None)

    def _drain(self) -> None:
        """SIGTERM: hand back what no pod has taken over, then follow the rest until they end (or a second one)."""
        with self._cond:
            holding = [f for f in self._followed.values() if f.holding]
        if holding:
            back = {job_id.decode() for job_id in self._scripts["RELEASE"](
                args=[self.name, self.queue, *(f.job.job_id for f in holding)])}
            for followed in holding:
                if followed.job.job_id in back:
                    self._forget(followed)
                    self._delete_job(followed)
            self.log.warning("launcher.handed_back", jobs=len(back))
        with self._cond:
            if self._followed:
                self.log.info("launcher.stopping", following=len(self._followed))
            while self._followed and not self._leaving:
                self._cond.wait(0.2)

    def _finish(self) -> None:
        self._done.set()
        self.presence.leave()  # at once: another launcher adopts what is still followed
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close()
        self.log.info("launcher.stopped")

    # -- one step attempt ------------------------------------------------------------------------
    def _launch(self, job_id: str, data: bytes, signature: bytes | None) -> None:
        try:
            job = decode_job(job_id, data, signature, self.key)
        except RefusedJob as exc:  # not ours to run, and its sender cannot be trusted with a report
            self.log.error("launcher.refused_job", job_id=job_id, error=str(exc))
            self._refuse(args=[self.name, rq_view.rq_time(), time.time(), self.queue, str(exc),
                               rq_view.exc_string_field(str(exc)), job_id])
            return
        followed = self._follow(job)
        if followed is None:
            return
        image = (followed.header.pod.image if followed.header.pod else None) or self.image
        if image is None:
            self._conclude(followed, ConfigurationError(NO_IMAGE), "error")
            return
        self._create_job(followed, image)

    def _follow(self, job: StepJob) -> Followed | None:
        try:
            header = LaunchHeader.model_validate_json(job.spec_json)
        except ValidationError as exc:  # reported under the job id: the coordinator knows whose step it is
            followed = Followed(job, LaunchHeader(), "", "", time.monotonic(), "")
            with self._cond:
                self._followed[job.job_id] = followed
            self._conclude(followed, ExecutionError(f"the launcher cannot read the spec of job {job.job_id}: "
                                                    f"{exc.errors()[0]['msg']}"), "error")
            return None
        pod = header.pod or PodRequest()
        assert self.cluster is not None
        namespace = pod.namespace or self.cluster.namespace
        followed = Followed(job, header, namespace, job_name(header.run_id, header.step_key, header.attempt),
                            time.monotonic(), pod.memory)
        with self._cond:
            self._followed[job.job_id] = followed
        self._watch(namespace)
        return followed

    def _create_job(self, followed: Followed, image: str) -> None:
        from kubernetes.client.exceptions import ApiException

        header = followed.header
        manifest = job_manifest(StepAttempt(followed.job.job_id, header.run_id, header.step_key, header.attempt),
                                header.pod or PodRequest(), image, redis_secret=self.redis_secret,
                                extra_env=self.pod_env)
        assert self.cluster is not None
        try:
            self.cluster.batch.create_namespaced_job(followed.namespace, manifest)
        except ApiException as exc:
            if exc.status == 409:  # a launcher that died created it: this very attempt, followed, not doubled
                self.log.info("launcher.job_exists", job=followed.name, step_key=header.step_key)
                self._catch_up(followed)
                return
            problem = f"the Kubernetes API refused to create Job {followed.name} in namespace " \
                      f"'{followed.namespace}' for step '{header.step_key}': {exc.status} {exc.reason}" \
                      f"{': ' + _api_message(exc) if _api_message(exc) else ''}"
            if exc.status is not None and 400 <= exc.status < 500:  # the manifest or our RBAC: a retry is no use
                self._conclude(followed, ExecutionError(problem), "error")
            else:
                self._conclude(followed, PodFailed(problem), "infrastructure")
            return
        except Exception as exc:  # noqa: BLE001 - the API server unreachable: infrastructure, retried
            self._conclude(followed, PodFailed(f"could not create Job {followed.name} for step '{header.step_key}': "
                                               f"{exc!r}"), "infrastructure")
            return
        self.log.info("launcher.job_created", job=followed.name, namespace=followed.namespace,
                      step_key=header.step_key, attempt=header.attempt)

    def _catch_up(self, followed: Followed) -> None:
        """Observe the current pods of a Job that existed before this launcher followed it."""
        assert self.cluster is not None
        selector = f"{STEP_PODS},{RUN_ID_LABEL}={label_value(followed.header.run_id)}," \
                   f"{ATTEMPT_LABEL}={followed.header.attempt}"
        try:
            pods = self.cluster.core.list_namespaced_pod(followed.namespace, label_selector=selector).items
        except Exception as exc:  # noqa: BLE001 - the watch will tell
            self.log.warning("launcher.list_failed", job=followed.name, error=repr(exc))
            return
        for pod in pods:
            self._observe("LISTED", pod)

    # -- pods ----------------------------------------------------------------------------------
    def _watch(self, namespace: str) -> None:
        with self._cond:
            if namespace in self._watched:
                return
            self._watched.add(namespace)
        threading.Thread(target=self._watch_loop, args=(namespace,), name=f"rivers-watch-{namespace}",
                         daemon=True).start()

    def _watch_loop(self, namespace: str) -> None:
        """List the step pods, then watch from that resourceVersion; list again when it is too old (410)."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        assert self.cluster is not None
        core = self.cluster.core
        version: str | None = None
        while not self._done.is_set():
            try:
                if version is None:
                    listing = core.list_namespaced_pod(namespace, label_selector=STEP_PODS)
                    for pod in listing.items:
                        self._observe("LISTED", pod)
                    version = listing.metadata.resource_version
                stream = watch.Watch()
                for event in stream.stream(core.list_namespaced_pod, namespace, label_selector=STEP_PODS,
                                           resource_version=version, timeout_seconds=defaults.WATCH_TIMEOUT_S):
                    self._observe(event["type"], event["object"])
                    version = stream.resource_version or version
            except ApiException as exc:
                if exc.status == 410:
                    self.log.info("launcher.watch_expired", namespace=namespace, resource_version=version)
                    version = None
                    continue
                self.log.warning("launcher.watch_failed", namespace=namespace, error=f"{exc.status} {exc.reason}")
                self._done.wait(1.0)
            except Exception as exc:  # noqa: BLE001 - the API server restarting: watch again, from where it was
                self.log.warning("launcher.watch_failed", namespace=namespace, error=repr(exc))
                self._done.wait(1.0)

    def _observe(self, kind: str, pod: Any) -> None:
        job_id = (pod.metadata.annotations or {}).get(JOB_ID_ANNOTATION)
        with self._cond:
            followed = self._followed.get(job_id) if job_id else None
        if followed is not None and followed.ended is not None:
            return  # its end is known, only not yet told
        owners = {owner.name for owner in pod.metadata.owner_references or [] if owner.kind == "Job"}
        if followed is None or followed.name not in owners:  # only the pod of the Job this launcher created
            return
        followed.pod = pod.metadata.name
        phase = pod.status.phase if pod.status else None
        if phase == "Succeeded":
            self._conclude(followed, None, "")
        elif phase == "Failed":
            failure, reason = self._failure_of(followed, pod)
            self._conclude(followed, failure, reason)
        elif kind == "DELETED":
            self._conclude(followed, PodFailed(
                f"step '{followed.header.step_key}': its pod {followed.pod} was deleted before it ended (deleted "
                "from outside, or with its Job)"), "infrastructure")
        elif phase == "Running":
            followed.started = True
        else:
            followed.waiting = _why_pending(pod)

    def _failure_of(self, followed: Followed, pod: Any) -> tuple[BaseException, str]:
        step = followed.header.step_key
        statuses = pod.status.container_statuses or []
        terminated = statuses[0].state.terminated if statuses and statuses[0].state else None
        deleted = " was deleted before it ended (deleted from outside, or with its Job) and" \
            if pod.metadata.deletion_timestamp else ""
        if terminated is None:
            why = ": ".join(part for part in (pod.status.reason, pod.status.message) if part) or "no reason given"
            return PodFailed(f"step '{step}': its pod {followed.pod}{deleted} failed: {why}"), "infrastructure"
        code = terminated.exit_code
        if terminated.reason == "OOMKilled":
            return OutOfMemory(f"step '{step}' was OOMKilled: its pod {followed.pod} went past its memory limit "
                               f"of {followed.memory} (exit code {code})"), "out_of_memory"
        if code is not None and code > 128:
            try:
                name = signal.Signals(code - 128).name
            except ValueError:
                name = f"signal {code - 128}"
            return PodFailed(f"step '{step}': its pod {followed.pod}{deleted} was killed by {name} "
                             f"(exit code {code})"), "infrastructure"
        detail = f" ({terminated.reason}: {terminated.message})" if terminated.message else ""
        return PodFailed(f"step '{step}': its pod {followed.pod}{deleted} ended with exit code {code} without "
                         f"reporting the step{detail}"), "infrastructure"

    # -- ending ----------------------------------------------------------------------------------
    def _conclude(self, followed: Followed, failure: BaseException | None, reason: str,
                  delete: bool = False) -> None:
        """The attempt's pod ended (or never will): report what the pod could not, once.

        With Redis unreachable the end is kept and told again at every heartbeat until Redis answers.
        """
        if not self._forget(followed):
            return
        try:
            self._tell(followed, failure, reason, delete)
        except Exception as exc:  # noqa: BLE001 - Redis unreachable: keep it, the heartbeat tells it again
            followed.ended = (failure, reason, delete)
            with self._cond:
                self._followed[followed.job.job_id] = followed
            self.log.warning("launcher.report_deferred", job=followed.name, error=repr(exc))

    def _tell(self, followed: Followed, failure: BaseException | None, reason: str, delete: bool) -> None:
        job = followed.job
        common = [self.name, rq_view.rq_time(), time.time(), self.queue, job.job_id, job.reply_to,
                  keys.reports_key_of(job.reply_to)]
        if failure is None:
            self._scripts["REPORT"](args=[*common, "", "", ""])
            self.log.info("launcher.pod_succeeded", job=followed.name, step_key=followed.header.step_key)
            self._delete_job(followed)
            return
        status, launcher = self.client.hmget(keys.job_key(job.job_id), keys.JOB_STATUS, keys.JOB_LAUNCHER)
        if status != keys.STARTED.encode() or launcher != self.name.encode():  # the pod reported, or not ours
            self._scripts["REPORT"](args=[*common, "", "", ""])
            return
        tail = self._last_log_lines(followed)
        message = str(failure) + (f"\nlast lines of the log of pod {followed.pod}:\n{tail}" if tail else "")
        exc = type(failure)(message)
        header = followed.header
        result = StepResult.failed(header.run_id, header.step_key, header.attempt, header.output_names, exc,
                                   infrastructure=reason in ("infrastructure", "out_of_memory"), reason=reason)
        summary = result.error.summary() if result.error else str(failure)
        reported = self._scripts["REPORT"](args=[
            *common, encode_report(job.job_id, result.model_dump_json(), self.key), summary,
            rq_view.exc_string_field(summary)])
        if delete:
            self._delete_job(followed)
        self.log.warning("launcher.step_failed", job=followed.name, step_key=header.step_key, reason=reason,
                         error=message, reported=reported == 1)

    def _forget(self, followed: Followed) -> bool:
        with self._cond:
            if self._followed.get(followed.job.job_id) is not followed:
                return False
            del self._followed[followed.job.job_id]
            self._cond.notify_all()
        return True

    def _delete_job(self, followed: Followed) -> None:
        if not followed.name or self.cluster is None:
            return
        try:
            self.cluster.batch.delete_namespaced_job(followed.name, followed.namespace,
                                                     propagation_policy="Background")
        except Exception as exc:  # noqa: BLE001 - gone already, or its TTL will remove it
            self.log.debug("launcher.delete_failed", job=followed.name, error=repr(exc))

    def _last_log_lines(self, followed: Followed) -> str:
        if followed.pod is None or self.cluster is None:
            return ""
        try:
            text = self.cluster.core.read_namespaced_pod_log(followed.pod, followed.namespace, container=CONTAINER,
                                                              tail_lines=defaults.POD_LOG_LINES)
        except Exception:  # noqa: BLE001 - a deleted or never-started pod has no log
            return ""
        return str(text or "").rstrip()

    # -- heartbeats, start timeouts, adoption ------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        while not self._done.wait(defaults.HEARTBEAT_S):
            try:
                self._retell()
                self._beat()
                self._check_starts()
                if not self._stopping:
                    self._adopt()
            except Exception as exc:  # noqa: BLE001 - Redis restarting: the next beat tries again
                self.log.warning("launcher.heartbeat_failed", error=repr(exc))

    def _beat(self) -> None:
        with self._cond:
            followed = list(self._followed.values())
        holding = [f for f in followed if f.holding]
        with self.presence.beating() as present:
            if not present:
                return
            pipe = self.client.pipeline(transaction=False)
            announce(pipe, self.name, EXECUTOR, [f.job.job_id for f in followed], self.birth, defaults.LAUNCHER_TTL_MS)
            pipe.execute()
        if holding:
            renewed = self._scripts["RENEW"](args=[self.name, defaults.LEASE_MS, *(f.job.job_id for f in holding)])
            for entry, mine in zip(holding, renewed, strict=True):
                entry.holding = bool(mine)

    def _retell(self) -> None:
        with self._cond:
            ended = [f for f in self._followed.values() if f.ended is not None]
        for followed in ended:
            assert followed.ended is not None
            self._conclude(followed, *followed.ended)

    def _check_starts(self) -> None:
        now = time.monotonic()
        with self._cond:
            late = [f for f in self._followed.values()
                    if not f.started and f.ended is None and now - f.since > self.start_timeout]
        for followed in late:
            why = followed.waiting or f"no pod was created for Job {followed.name}"
            self._conclude(followed, PodFailed(
                f"step '{followed.header.step_key}': pod never started: {why} (waited {self.start_timeout:g} s)"),
                "infrastructure", delete=True)

    def _adopt(self) -> None:
        adopted = self._scripts["ADOPT"](args=[self.name, defaults.LEASE_MS])
        for index in range(0, len(adopted), 3):
            job_id = adopted[index].decode()
            with self._cond:
                if job_id in self._followed:
                    continue
            try:
                job = decode_job(job_id, adopted[index + 1], adopted[index + 2] or None, self.key)
            except RefusedJob as exc:
                self.log.error("launcher.refused_job", job_id=job_id, error=str(exc))
                continue
            followed = self._follow(job)
            if followed is None:
                continue
            self.log.warning("launcher.adopted", job=followed.name, step_key=followed.header.step_key,
                             reason="the launcher that followed it stopped heartbeating")
            self._adopt_job(followed)

    def _adopt_job(self, followed: Followed) -> None:
        from kubernetes.client.exceptions import ApiException

        assert self.cluster is not None
        try:
            self.cluster.batch.read_namespaced_job(followed.name, followed.namespace)
        except ApiException as exc:
            if exc.status != 404:
                self.log.warning("launcher.read_failed", job=followed.name, error=f"{exc.status} {exc.reason}")
                return
            image = (followed.header.pod.image if followed.header.pod else None) or self.image
            if image is None:
                self._conclude(followed, ConfigurationError(NO_IMAGE), "error")
            else:  # its launcher died before creating it
                self._create_job(followed, image)
            return
        self._catch_up(followed)


def _why_pending(pod: Any) -> str:
    """Why a pending pod is not running: its container's waiting reason, or the scheduler's."""
    status = pod.status
    for container in (status.container_statuses or []) if status else []:
        waiting = container.state.waiting if container.state else None
        if waiting is not None and waiting.reason and waiting.reason != "ContainerCreating":
            return f"{waiting.reason}: {waiting.message}" if waiting.message else waiting.reason
    for condition in (status.conditions or []) if status else []:
        if condition.type == "PodScheduled" and condition.status == "False":
            return f"{condition.reason}: {condition.message}" if condition.message else str(condition.reason)
    return ""


def _api_message(exc: Any) -> str:
    import json

    try:
        return str(json.loads(exc.body).get("message", ""))
    except (TypeError, ValueError, AttributeError):
        return ""
