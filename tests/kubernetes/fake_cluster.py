"""A fake Kubernetes cluster for the tests: an API server, a "kubelet" and a Job controller in this process.

The official, unpatched `kubernetes` client talks to it over HTTP on 127.0.0.1 through a kubeconfig, and the
pods really run: the kubelet starts the first container's `command + args` as a local process with exactly the
pod's env (secrets resolved), reports real exit codes and enforces `limits.memory` (a memory cgroup where the
machine allows it, else an RSS watchdog), so `OOMKilled` means the process was killed for its memory.

Parts (tests/kubernetes/fake/): objects.py (kinds, Status errors, validation, defaulting, selectors),
store.py (objects, resourceVersion, history, watch), apiserver.py (Api: request semantics; ApiHandler: HTTP),
kubelet.py (a PodWorker thread per pod), memory.py (cgroup or RSS watchdog), jobs.py (JobController)::

    client --HTTP--> ApiHandler --> Api (validate, default, delete/GC) --> Store (objects, resourceVersion, history)
                                                 every change, in order, as an Event |
                Kubelet <--------------------------------------------------------------+----------> JobController
    a PodWorker per pod: holds, image "pull", secrets,                       one pod per Job; the pod's end into
    run container 0 (memory limit), kill, report status                      status.succeeded/failed/conditions

Served (core/v1 `pods`, `secrets`; batch/v1 `jobs`), namespaced and (list/watch) all-namespace paths:
  POST   .../{resource}                          create: 201; 409 AlreadyExists; 422 Invalid; `generateName`
  GET    .../{resource}/{name}[/status]           read: 404 NotFound Status
  GET    .../{resource}?labelSelector=&fieldSelector=           list (`k=v,k!=v,k,!k,k in (a,b),k notin (a)`)
  GET    ...&watch=true[&resourceVersion=N][&timeoutSeconds=S]  chunked JSON lines; resume from N; ERROR 410
                                                                 "Expired" when N is compacted or expired
  DELETE .../{resource}/{name}   pods: graceful (SIGTERM, deletionTimestamp, SIGKILL after the grace period;
                                 gracePeriodSeconds=0 removes at once); jobs: propagationPolicy Background /
                                 Foreground / Orphan (the batch/v1 default, with the API server's warning)
  DELETE .../{resource}          delete collection (same selectors)
  GET    /api/v1/namespaces/{ns}/pods/{name}/log  text/plain; container, tailLines, limitBytes, follow
  GET    /version
Namespaces exist implicitly. The bearer token of the kubeconfig is required (401 otherwise).

Pod life: Pending (ADDED) -> scheduled (nodeName, PodScheduled=True, waiting ContainerCreating) -> Running ->
Succeeded / Failed with containerStatuses[0].state.terminated {exitCode, reason Completed | Error | OOMKilled |
StartError (128, command not found)}; a signal N is exit code 128 + N. The process gets exactly the image's env,
HOSTNAME (the pod name) and the container's env / envFrom (value with $(VAR), secretKeyRef, fieldRef), runs in
workingDir / the image's workdir / a scratch dir, in its own process group (killed as a whole), its stdout and
stderr being the pod's log. A missing secret or key (not optional) or runAsNonRoot against a root image: Pending,
waiting CreateContainerConfigError, retried until it resolves.

What a test can do (conftest.py's `fake_cluster` fixture hands out a reset cluster per test, `kube` the client):
  cluster.add_image(name, env=..., user=1000, workdir=None)   what an image "contains": extra env such as
        PATH / PYTHONPATH; unknown images stay Pending with ErrImagePull / ImagePullBackOff
  cluster.add_secret(ns, name, {"key": "value"})              or create Secrets through the client
  cluster.hold(match=None, reason="Unschedulable", message=None) -> Hold
        keep matching pods (None = all, a label selector string, or a predicate on the pod dict) Pending:
        "Unschedulable" -> condition PodScheduled=False; any other reason -> containers[0] waiting with it.
        `hold.release()` (or leave the `with` block) and they start.
  cluster.peak_running / cluster.peak_pods, cluster.reset_peaks()   most pods Running / not yet ended at once
  cluster.compact()          every resourceVersion handed out so far becomes too old: a watch from one gets
                             ERROR 410 Expired
  cluster.expire_watches()   every open watch gets ERROR 410 now; the client resumes once by itself from the
                             last resourceVersion it saw (compact() first and that resume fails too: the
                             client raises ApiException(410) and the caller must list again)
  cluster.inject_error(method, path_regex, code=500, reason="InternalError", times=1)
  cluster.requests           every request (method, path, query): e.g. assert a launcher watches, not polls
  cluster.set_oom_mode("cgroup" | "watchdog"), cluster.oom_mode, cluster.cgroup_unavailable (why, or None)
  cluster.pod(ns, name), cluster.pods(ns, selector), cluster.job(ns, name), cluster.jobs(ns, selector)
        stored objects as dicts (the JSON the client sees); cluster.process(ns, name) -> psutil.Process | None
  cluster.reset()            delete everything, kill every pod process, restore defaults; returns leaked pids
  cluster.kubelet.pull_backoff / poll_interval, cluster.kubelet.errors, cluster.controller.errors (asserted empty)

Not emulated: restarts (every pod runs once, as restartPolicy Never), containers after the first, init
containers, volumes (accepted, ignored), CPU limits, PATCH/PUT, Jobs with parallelism/completions > 1,
activeDeadlineSeconds, service accounts (any name is accepted) and users (runAsNonRoot is checked against the
image's declared user, but the process runs as the test's user).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from tests.kubernetes.fake.apiserver import Api, ApiServer, Request
from tests.kubernetes.fake.jobs import JobController
from tests.kubernetes.fake.kubelet import UNSCHEDULABLE, Hold, Image, Kubelet
from tests.kubernetes.fake.memory import CgroupMemory, MemoryLimiter, RssWatchdog
from tests.kubernetes.fake.objects import KINDS, ApiError, Obj, Selector
from tests.kubernetes.fake.store import Store

__all__ = ["ApiError", "FakeCluster", "Hold", "Image", "Request"]


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    error: ApiError
    times: int


class FakeCluster:
    """API server + kubelet + Job controller; see the module docstring for what a test can do with it."""

    def __init__(self, *, images: dict[str, Image] | None = None, oom_mode: str = "auto",
                 token: str | None = "fake-token") -> None:
        self.default_images = dict(images or {})
        self.token = token
        self.tmp = Path(tempfile.mkdtemp(prefix="rivers-fake-k8s-"))
        self.kubeconfig: Path | None = None
        self.requests: list[Request] = []
        self._faults: list[Fault] = []
        self._cgroup: CgroupMemory | None = None
        self.cgroup_unavailable: str | None = None
        try:
            self._cgroup = CgroupMemory.create()
        except (OSError, RuntimeError, StopIteration) as exc:
            self.cgroup_unavailable = f"no writable memory cgroup here ({type(exc).__name__}: {exc})"
        self.default_oom_mode = ("cgroup" if self._cgroup else "watchdog") if oom_mode == "auto" else oom_mode
        self.store = Store()
        self.kubelet = Kubelet(self.store, self._limiter(self.default_oom_mode), self.tmp / "node")
        self.api = Api(self.store, self.kubelet)
        self.controller = JobController(self.store, self.api)
        self.kubelet.images.update(self.default_images)
        self.server = ApiServer(self)
        self.url = self.server.url

    def __enter__(self) -> FakeCluster:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.controller.pause()
        self.store.close()
        self.kubelet.stop_all()
        self.server.close()
        if self._cgroup is not None:
            self._cgroup.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        user = {"token": self.token} if self.token else {}
        config = {"apiVersion": "v1", "kind": "Config", "current-context": "fake",
                  "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                  "users": [{"name": "fake", "user": user}],
                  "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake",
                                                            "namespace": namespace}}]}
        path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        self.kubeconfig = path
        return path

    # --- hooks ----------------------------------------------------------------------------------------
    def add_image(self, name: str, env: dict[str, str] | None = None, *, user: int = 1000,
                  workdir: str | None = None) -> Image:
        image = self.kubelet.images[name] = Image(dict(env or {}), user, workdir)
        return image

    def add_secret(self, ns: str, name: str, data: dict[str, str]) -> Obj:
        return self.api.create("secrets", ns, {"metadata": {"name": name}, "stringData": data})

    def hold(self, match: str | Callable[[Obj], bool] | None = None, reason: str = UNSCHEDULABLE,
             message: str | None = None) -> Hold:
        """Keep matching pods (a label selector, a predicate on the pod dict, None for all) Pending."""
        if isinstance(match, str):
            match = Selector(KINDS["pods"], None, match)
        default = "0/1 nodes are available: 1 Insufficient memory." if reason == UNSCHEDULABLE else \
            f"held by the test ({reason})"
        hold = Hold(match or (lambda _: True), reason, message or default, self.kubelet.holds)
        self.kubelet.holds.append(hold)
        return hold

    def compact(self) -> None:
        self.store.compact()

    def expire_watches(self) -> None:
        self.store.expire_watches()

    def inject_error(self, method: str, path: str, code: int = 500, reason: str = "InternalError",
                     times: int = 1, message: str = "injected by the test") -> None:
        """The next `times` requests with this method whose path matches the regex `path` fail so."""
        self._faults.append(Fault(method.upper(), re.compile(path), ApiError(code, reason, message), times))

    def check_request(self, method: str, path: str, authorization: str | None) -> None:
        if self.token and authorization != f"Bearer {self.token}":
            raise ApiError(401, "Unauthorized", "Unauthorized")
        for fault in list(self._faults):
            if fault.method == method and fault.path.search(path) and fault.times > 0:
                fault.times -= 1
                raise fault.error

    @property
    def peak_running(self) -> int:
        return self.store.peak_running

    @property
    def peak_pods(self) -> int:
        return self.store.peak_pods

    def reset_peaks(self) -> None:
        with self.store.cond:
            self.store.peak_running = self.store.peak_pods = 0

    @property
    def oom_mode(self) -> str:
        return self.kubelet.memory.mode

    def set_oom_mode(self, mode: str) -> None:
        if mode == "cgroup" and self._cgroup is None:
            raise RuntimeError(self.cgroup_unavailable)
        self.kubelet.memory = self._limiter(mode)

    def _limiter(self, mode: str) -> MemoryLimiter:
        if mode == "cgroup" and self._cgroup is not None:
            return self._cgroup
        if mode in ("watchdog", "cgroup"):  # "cgroup" asked for where there is none: the caller reads the reason
            return RssWatchdog()
        raise ValueError(f"unknown OOM mode {mode!r}: cgroup | watchdog | auto")

    # --- reading the state ------------------------------------------------------------------------------
    def pod(self, ns: str, name: str) -> Obj:
        return self.store.get("pods", ns, name)

    def pods(self, ns: str | None = None, selector: str = "") -> list[Obj]:
        return self.store.list("pods", Selector(KINDS["pods"], ns, selector))

    def job(self, ns: str, name: str) -> Obj:
        return self.store.get("jobs", ns, name)

    def jobs(self, ns: str | None = None, selector: str = "") -> list[Obj]:
        return self.store.list("jobs", Selector(KINDS["jobs"], ns, selector))

    def process(self, ns: str, name: str) -> psutil.Process | None:
        """The running process of a pod's container, if any."""
        with contextlib.suppress(ApiError, psutil.Error):
            worker = self.kubelet.worker(self.pod(ns, name)["metadata"]["uid"])
            if worker is not None and worker.proc is not None and worker.proc.returncode is None:
                return psutil.Process(worker.proc.pid)
        return None

    def leaked_processes(self) -> list[int]:
        leaked = []
        for proc in psutil.process_iter(["pid", "status"]):
            with contextlib.suppress(psutil.Error, OSError):
                if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) in self.kubelet.pgids:
                    leaked.append(proc.pid)
        return leaked

    def reset(self) -> list[int]:
        """Back to an empty cluster with the default images; kills every pod process; returns leaked pids."""
        self.controller.pause()
        self.kubelet.holds.clear()
        self.store.clear()
        self.kubelet.stop_all()
        self.controller.resume()
        self.kubelet.images.clear()
        self.kubelet.images.update(self.default_images)
        self.kubelet.memory = self._limiter(self.default_oom_mode)
        self._faults.clear()
        self.requests.clear()
        for path in self.kubelet.workdir.iterdir():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        deadline = time.monotonic() + 5
        while (leaked := self.leaked_processes()) and time.monotonic() < deadline:
            time.sleep(0.02)
        for pid in leaked:
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
        return leaked
