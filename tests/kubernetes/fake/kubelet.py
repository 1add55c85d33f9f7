"""The one node: a thread per pod that holds, "pulls", resolves env, runs container 0 and reports its status."""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kubernetes.utils.quantity import parse_quantity

from tests.kubernetes.fake.memory import MemoryLimiter
from tests.kubernetes.fake.objects import ApiError, Obj, field_value, now, set_condition
from tests.kubernetes.fake.store import Event, Store

NODE = "fake-node"
UNSCHEDULABLE = "Unschedulable"
CONFIG_ERROR = "CreateContainerConfigError"


class PodGone(Exception):
    """The pod a kubelet worker serves was deleted (or replaced by one of the same name)."""

@dataclass
class Image:
    """What a test says an image contains: its ENV (e.g. PATH to the venv, PYTHONPATH to the project), its
    USER (checked against runAsNonRoot; the process still runs as the test's user) and its WORKDIR."""

    env: dict[str, str] = field(default_factory=dict)
    user: int = 1000
    workdir: str | None = None


@dataclass
class Hold:
    """Keeps matching pods Pending with `reason` until released (see FakeCluster.hold)."""

    match: Callable[[Obj], bool]
    reason: str
    message: str
    _holds: list[Hold] = field(repr=False)

    def release(self) -> None:
        with contextlib.suppress(ValueError):
            self._holds.remove(self)

    def __enter__(self) -> Hold:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass(frozen=True)
class Waiting:
    reason: str
    message: str


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    env: dict[str, str]
    cwd: str
    memory_limit: int | None


class Kubelet:
    """The one node: a PodWorker thread per pod, started on its ADDED event, killed on its DELETED event."""

    def __init__(self, store: Store, memory: MemoryLimiter, workdir: Path) -> None:
        self.store, self.memory, self.workdir = store, memory, workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.images: dict[str, Image] = {}
        self.holds: list[Hold] = []
        self.poll_interval = 0.02  # how soon a held / waiting pod notices a change
        self.pull_backoff = 0.3  # ErrImagePull and ImagePullBackOff alternate at this period
        self.pgids: set[int] = set()  # every process group started, for the leak check
        self.errors: list[BaseException] = []  # unexpected failures of worker threads (asserted empty)
        self._workers: dict[str, PodWorker] = {}
        self._lock = threading.Lock()
        store.subscribers.append(self._on_event)

    def _on_event(self, event: Event) -> None:
        if event.resource != "pods":
            return
        uid = event.obj["metadata"]["uid"]
        if event.type == "ADDED":
            worker = PodWorker(self, event.obj)
            with self._lock:
                self._workers[uid] = worker
            worker.start()
        elif event.type == "DELETED" and (worker := self.worker(uid)) is not None:
            worker.kill()

    def worker(self, uid: str) -> PodWorker | None:
        with self._lock:
            return self._workers.get(uid)

    def hold_for(self, pod: Obj) -> Hold | None:
        return next((h for h in list(self.holds) if h.match(pod)), None)

    def secret_data(self, ns: str, name: str) -> dict[str, str] | None:
        try:
            secret = self.store.get("secrets", ns, name)
        except ApiError:
            return None
        return {k: base64.b64decode(v).decode(errors="surrogateescape") for k, v in (secret["data"] or {}).items()}

    def stop_all(self, timeout: float = 10.0) -> None:
        with self._lock:
            workers = list(self._workers.values())
            self._workers.clear()
        for worker in workers:
            worker.kill()
        for worker in workers:
            worker.join(timeout)


class PodWorker(threading.Thread):
    """One pod's life on the node: holds, scheduling, image "pull", secrets, run container 0, report its end."""

    def __init__(self, kubelet: Kubelet, pod: Obj) -> None:
        meta = pod["metadata"]
        super().__init__(daemon=True, name=f"kubelet-{meta['namespace']}/{meta['name']}")
        self.kubelet = kubelet
        self.ns, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.log_path = kubelet.workdir / f"{self.uid}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopping = threading.Event()  # deleted or being deleted: never start
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._pull_failed_at: float | None = None

    def run(self) -> None:
        try:
            launch = self._wait_until_startable()
            if launch is not None:
                self._run_container(launch)
        except PodGone:
            pass
        except Exception as exc:  # noqa: BLE001 - a daemon thread: keep it for the teardown assertion
            self.kubelet.errors.append(exc)
        finally:
            self.done.set()

    def kill(self) -> None:
        with self._lock:
            self.stopping.set()
        self._signal(signal.SIGKILL)

    def terminate(self, grace: float) -> bool:
        """SIGTERM now, SIGKILL after `grace`; False when no process is running (remove the pod at once)."""
        with self._lock:
            self.stopping.set()
            proc = self.proc
        if proc is None or proc.poll() is not None:
            return False
        self._signal(signal.SIGTERM)
        timer = threading.Timer(grace, self._signal, (signal.SIGKILL,))
        timer.daemon = True
        timer.start()
        return True

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, sig)

    def _update(self, mutate: Callable[[Obj], None]) -> Obj:
        def guarded(pod: Obj) -> None:
            if pod["metadata"]["uid"] != self.uid:
                raise PodGone
            mutate(pod)
        try:
            return self.kubelet.store.update("pods", self.ns, self.name, guarded)
        except ApiError as exc:
            raise PodGone from exc

    def _pod(self) -> Obj:
        return self._update(lambda pod: None)

    def _wait_until_startable(self) -> Launch | None:
        scheduled = False
        while not self.stopping.is_set():
            pod = self._pod()
            hold = self.kubelet.hold_for(pod)
            if not scheduled and hold is not None and hold.reason == UNSCHEDULABLE:
                self._update(lambda p, m=hold.message: _set_unschedulable(p, m))
            elif not scheduled:
                self._update(_set_scheduled)
                scheduled = True
                continue
            else:
                result = self._prepare(pod, hold)
                if isinstance(result, Launch):
                    return result
                self._update(lambda p, w=result: _set_waiting(p, w))
            self.stopping.wait(self.kubelet.poll_interval)
        return None

    def _prepare(self, pod: Obj, hold: Hold | None) -> Launch | Waiting:
        c = pod["spec"]["containers"][0]
        if hold is not None:
            return Waiting(hold.reason, hold.message)
        image = self.kubelet.images.get(c["image"])
        if image is None:
            return self._pull_error(c)
        security = {**(pod["spec"].get("securityContext") or {}), **(c.get("securityContext") or {})}
        if security.get("runAsNonRoot") and security.get("runAsUser", image.user) == 0:
            return Waiting(CONFIG_ERROR, f'container has runAsNonRoot and image will run as root (pod: '
                                         f'"{self.name}_{self.ns}({self.uid})", container: {c["name"]})')
        resolved = self._environment(pod, c, image)
        if isinstance(resolved, Waiting):
            return resolved
        env, defined = resolved  # defined: the container's own variables, for $(VAR) in command and args
        argv = [_expand(a, defined) for a in (c.get("command") or []) + (c.get("args") or [])]
        cwd = c.get("workingDir") or image.workdir or str(self.kubelet.workdir / self.uid)
        Path(cwd).mkdir(parents=True, exist_ok=True)
        memory = ((c.get("resources") or {}).get("limits") or {}).get("memory")
        return Launch(argv, env, cwd, int(parse_quantity(memory)) if memory else None)

    def _pull_error(self, c: Obj) -> Waiting:
        if c.get("imagePullPolicy") == "Never":
            return Waiting("ErrImageNeverPull", f'Container image "{c["image"]}" is not present with pull '
                                                'policy of Never')
        if self._pull_failed_at is None:
            self._pull_failed_at = time.monotonic()
        if int((time.monotonic() - self._pull_failed_at) / self.kubelet.pull_backoff) % 2:
            return Waiting("ImagePullBackOff", f'Back-off pulling image "{c["image"]}"')
        return Waiting("ErrImagePull", f'failed to pull and unpack image "{c["image"]}": not found '
                                       "(the fake cluster has no such image; see FakeCluster.add_image)")

    def _environment(self, pod: Obj, c: Obj, image: Image) -> tuple[dict[str, str], dict[str, str]] | Waiting:
        defined: dict[str, str] = {}
        for source in c.get("envFrom") or []:
            ref = source["secretRef"]
            data = self.kubelet.secret_data(self.ns, ref["name"])
            if data is None and not ref.get("optional"):
                return Waiting(CONFIG_ERROR, f'secret "{ref["name"]}" not found')
            defined.update({source.get("prefix", "") + k: v for k, v in (data or {}).items()})
        for var in c.get("env") or []:
            source = var.get("valueFrom")
            if not source:
                defined[var["name"]] = _expand(var.get("value", ""), defined)
            elif "fieldRef" in source:
                defined[var["name"]] = _pod_field(pod, source["fieldRef"]["fieldPath"])
            else:
                ref = source["secretKeyRef"]
                data = self.kubelet.secret_data(self.ns, ref["name"])
                if data is not None and ref["key"] in data:
                    defined[var["name"]] = data[ref["key"]]
                elif not ref.get("optional"):
                    return Waiting(CONFIG_ERROR, f'secret "{ref["name"]}" not found' if data is None else
                                   f"couldn't find key {ref['key']} in Secret {self.ns}/{ref['name']}")
        hostname = pod["spec"].get("hostname") or self.name
        return {**image.env, "HOSTNAME": hostname, **defined}, defined

    def _run_container(self, launch: Launch) -> None:
        self.log_path.touch()
        path = launch.env.get("PATH", os.defpath)
        exe = shutil.which(launch.argv[0], path=path) if launch.argv and "/" not in launch.argv[0] else \
            (launch.argv[0] if launch.argv and os.access(launch.argv[0], os.X_OK) else None)
        if exe is None:
            name = launch.argv[0] if launch.argv else "<no command>"
            return self._finish(128, "StartError", None, f'failed to create containerd task: exec: "{name}": '
                                                         "executable file not found in $PATH")
        limit = None
        if launch.memory_limit is not None:
            limit = self.kubelet.memory.limit(f"{self.ns}.{self.name}.{self.uid[:8]}", launch.memory_limit)
        argv = [exe, *launch.argv[1:]]
        started, rc, oom = None, 0, False
        try:
            with self._lock:
                if self.stopping.is_set():
                    return None
                with self.log_path.open("ab") as log:
                    try:
                        self.proc = subprocess.Popen(
                            limit.wrap(argv) if limit else argv, env=launch.env, cwd=launch.cwd,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
                    except OSError as exc:
                        self.proc = None
                        start_error = f"failed to create containerd task: {exc}"
                    else:
                        start_error = None
                        self.kubelet.pgids.add(self.proc.pid)
            if self.proc is None:
                return self._finish(128, "StartError", None, start_error)
            if limit:
                limit.started(self.proc)
            started = now()
            self._update(lambda p: _set_running(p, started))
            rc = self.proc.wait()
            oom = limit is not None and limit.oom_killed()
        finally:
            if self.proc is not None:  # the container's other processes die with it
                with contextlib.suppress(OSError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            if limit is not None:
                limit.close()
        code = 128 - rc if rc < 0 else rc  # killed by signal N -> 128 + N, as container runtimes report
        reason = "OOMKilled" if oom and rc != 0 else "Completed" if rc == 0 else "Error"
        return self._finish(code, reason, started, None)

    def _finish(self, code: int, reason: str, started: str | None, message: str | None) -> None:
        pod = self._update(lambda p: _set_terminated(p, code, reason, started, message))
        if pod["metadata"].get("deletionTimestamp"):  # a graceful deletion ends with the container
            with contextlib.suppress(ApiError):
                self.kubelet.store.remove("pods", self.ns, self.name, self.uid)


def _expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) references ($$ escapes a dollar)."""
    return re.sub(r"\$\$|\$\(([^)]*)\)",
                  lambda m: "$" if m[0] == "$$" else env.get(m[1], m[0]), text)


def _pod_field(pod: Obj, path: str) -> str:
    m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if m:
        return (pod["metadata"].get(m[1]) or {}).get(m[2], "")
    return field_value(pod, path)




def _container_status(pod: Obj, state: Obj, *, running: bool = False, image_id: str = "") -> list[Obj]:
    c = pod["spec"]["containers"][0]
    out = {"name": c["name"], "image": c["image"], "imageID": image_id, "ready": running, "restartCount": 0,
           "started": running, "state": state}
    if image_id:
        out["containerID"] = f"fake://{pod['metadata']['uid']}"
    return [out]


def _set_unschedulable(pod: Obj, message: str) -> None:
    set_condition(pod["status"], "PodScheduled", "False", UNSCHEDULABLE, message)


def _set_scheduled(pod: Obj) -> None:
    pod["spec"]["nodeName"] = NODE
    status = pod["status"]
    status.update(hostIP="127.0.0.1", podIP="127.0.0.1", podIPs=[{"ip": "127.0.0.1"}], startTime=now())
    names = f"containers with unready status: [{pod['spec']['containers'][0]['name']}]"
    set_condition(status, "Initialized", "True")
    set_condition(status, "Ready", "False", "ContainersNotReady", names)
    set_condition(status, "ContainersReady", "False", "ContainersNotReady", names)
    set_condition(status, "PodScheduled", "True")
    status["containerStatuses"] = _container_status(pod, {"waiting": {"reason": "ContainerCreating"}})


def _set_waiting(pod: Obj, waiting: Waiting) -> None:
    state = {"waiting": {"reason": waiting.reason, "message": waiting.message}}
    pod["status"]["containerStatuses"] = _container_status(pod, state)


def _set_running(pod: Obj, started: str) -> None:
    status = pod["status"]
    status["phase"] = "Running"
    status["containerStatuses"] = _container_status(pod, {"running": {"startedAt": started}}, running=True,
                                                    image_id=f"fake://{pod['spec']['containers'][0]['image']}")
    set_condition(status, "Ready", "True")
    set_condition(status, "ContainersReady", "True")


def _set_terminated(pod: Obj, code: int, reason: str, started: str | None, message: str | None) -> None:
    status = pod["status"]
    status["phase"] = "Succeeded" if code == 0 else "Failed"
    terminated = {"exitCode": code, "reason": reason, "finishedAt": now(), "startedAt": started,
                  "message": message}
    state = {"terminated": {k: v for k, v in terminated.items() if v is not None}}
    status["containerStatuses"] = _container_status(
        pod, state, image_id=f"fake://{pod['spec']['containers'][0]['image']}")
    set_condition(status, "Ready", "False", "PodCompleted")
    set_condition(status, "ContainersReady", "False", "PodCompleted")
