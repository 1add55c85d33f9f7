"""kube-apiserver: request semantics (create, list, delete with propagation, logs) and the HTTP layer."""

from __future__ import annotations

import contextlib
import json
import random
import re
import select
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from copy import deepcopy
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from tests.kubernetes.fake.kubelet import Kubelet, PodWorker
from tests.kubernetes.fake.objects import DEFAULT, KINDS, TERMINAL, VALIDATE, ApiError, Kind, Obj, Selector, now
from tests.kubernetes.fake.store import Store

if TYPE_CHECKING:
    from tests.kubernetes.fake_cluster import FakeCluster


ORPHAN_WARNING = ("child pods are preserved by default when jobs are deleted; set propagationPolicy=Background to "
                  "remove them or set propagationPolicy=Orphan to suppress this warning")


class Api:
    """What kube-apiserver and its garbage collector do with requests, independent of HTTP."""

    def __init__(self, store: Store, kubelet: Kubelet) -> None:
        self.store, self.kubelet = store, kubelet

    def create(self, resource: str, ns: str, body: Obj, *, dry_run: bool = False) -> Obj:
        kind = KINDS[resource]
        obj = deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if meta.get("namespace", ns) != ns:
            raise ApiError(400, "BadRequest", "the namespace of the provided object does not match the "
                                              "namespace sent on the request")
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"][:58] + "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=5))
        causes = VALIDATE[resource](obj)
        if causes:
            raise causes.error(kind, meta.get("name") or "")
        meta.pop("resourceVersion", None)
        meta.update(namespace=ns, uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
        obj.update(apiVersion=kind.api_version, kind=kind.kind)
        DEFAULT[resource](obj)
        return obj if dry_run else self.store.create(resource, obj)

    def get(self, resource: str, ns: str, name: str) -> Obj:
        return self.store.get(resource, ns, name)

    def list(self, resource: str, ns: str | None, query: dict[str, str]) -> Obj:
        kind = KINDS[resource]
        match = Selector(kind, ns, query.get("labelSelector", ""), query.get("fieldSelector", ""))
        with self.store.cond:
            items, rv = self.store.list(resource, match), self.store.rv
        for item in items:  # list items carry no apiVersion / kind
            item.pop("apiVersion", None)
            item.pop("kind", None)
        return {"kind": f"{kind.kind}List", "apiVersion": kind.api_version,
                "metadata": {"resourceVersion": str(rv)}, "items": items}

    def delete(self, resource: str, ns: str, name: str, options: Obj) -> tuple[Obj, list[str]]:
        """The response body and the API server's warnings."""
        if resource == "pods":
            return self.delete_pod(ns, name, options.get("gracePeriodSeconds")), []
        if resource == "jobs":
            return self._delete_job(ns, name, options)
        removed = self.store.remove(resource, ns, name)
        return _success(resource, removed), []

    def delete_collection(self, resource: str, ns: str, query: dict[str, str], options: Obj) -> Obj:
        match = Selector(KINDS[resource], ns, query.get("labelSelector", ""), query.get("fieldSelector", ""))
        for obj in self.store.list(resource, match):
            with contextlib.suppress(ApiError):
                self.delete(resource, ns, obj["metadata"]["name"], options)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}

    def delete_pod(self, ns: str, name: str, grace: int | None = None) -> Obj:
        """Graceful: deletionTimestamp (MODIFIED), SIGTERM, SIGKILL after the grace period, the container's
        end (MODIFIED), then DELETED. Pods without a running process, and grace 0, go at once."""
        pod = self.store.get("pods", ns, name)
        grace = pod["spec"].get("terminationGracePeriodSeconds", 30) if grace is None else int(grace)
        if grace > 0 and pod["status"]["phase"] not in TERMINAL:
            if pod["metadata"].get("deletionTimestamp"):
                return pod
            worker = self.kubelet.worker(pod["metadata"]["uid"])
            if worker is not None and worker.proc is not None and worker.proc.poll() is None:
                def mark(obj: Obj) -> None:
                    obj["metadata"].update(deletionTimestamp=now(), deletionGracePeriodSeconds=grace)
                pod = self.store.update("pods", ns, name, mark)
                if worker.terminate(grace):
                    return pod
        try:
            return self.store.remove("pods", ns, name, pod["metadata"]["uid"])
        except ApiError:  # the container ended meanwhile and took the pod with it
            return pod

    def _delete_job(self, ns: str, name: str, options: Obj) -> tuple[Obj, list[str]]:
        policy = options.get("propagationPolicy")
        warnings = []
        if policy is None:
            policy = "Background" if options.get("orphanDependents") is False else "Orphan"
            warnings = [ORPHAN_WARNING] if "orphanDependents" not in options else []
        if policy not in ("Orphan", "Background", "Foreground"):
            raise ApiError(422, "Invalid", f'propagationPolicy: Unsupported value: "{policy}"')
        job = self.store.get("jobs", ns, name)
        uid = job["metadata"]["uid"]
        if policy == "Foreground":
            def mark(obj: Obj) -> None:
                obj["metadata"].setdefault("deletionTimestamp", now())
                obj["metadata"]["finalizers"] = ["foregroundDeletion"]
            job = self.store.update("jobs", ns, name, mark)
            threading.Thread(target=self._foreground, args=(ns, name, uid), daemon=True).start()
            return job, warnings
        removed = self.store.remove("jobs", ns, name, uid)
        for pod in self._dependents(ns, uid):
            if policy == "Background":
                with contextlib.suppress(ApiError):
                    self.delete_pod(ns, pod["metadata"]["name"])
            else:
                with contextlib.suppress(ApiError):
                    self.store.update("pods", ns, pod["metadata"]["name"], lambda p: p["metadata"].update(
                        ownerReferences=[o for o in p["metadata"].get("ownerReferences", []) if o["uid"] != uid]))
        return _success("jobs", removed), warnings

    def _foreground(self, ns: str, name: str, uid: str) -> None:
        for pod in self._dependents(ns, uid):
            with contextlib.suppress(ApiError):
                self.delete_pod(ns, pod["metadata"]["name"])
        deadline = time.monotonic() + 120
        while self._dependents(ns, uid) and time.monotonic() < deadline and not self.store.closed:
            time.sleep(0.02)
        with contextlib.suppress(ApiError):
            self.store.remove("jobs", ns, name, uid)

    def _dependents(self, ns: str, uid: str) -> list[Obj]:
        return self.store.list("pods", lambda p: p["metadata"]["namespace"] == ns and any(
            o["uid"] == uid for o in p["metadata"].get("ownerReferences") or []))

    def read_log(self, ns: str, name: str, query: dict[str, str]) -> bytes | Iterator[bytes]:
        pod = self.store.get("pods", ns, name)
        containers = [c["name"] for c in pod["spec"]["containers"]]
        container = query.get("container") or containers[0]
        if container not in containers:
            raise ApiError(400, "BadRequest", f"container {container} is not valid for pod {name}")
        worker = self.kubelet.worker(pod["metadata"]["uid"])
        path = self.kubelet.workdir / f"{pod['metadata']['uid']}.log"
        if container != containers[0] or not path.exists():
            statuses = pod["status"].get("containerStatuses") or [{}]
            waiting = statuses[0].get("state", {}).get("waiting", {}).get("reason", "ContainerCreating")
            raise ApiError(400, "BadRequest", f'container "{container}" in pod "{name}" is waiting to start: '
                                              f"{waiting}")
        data = path.read_bytes()
        offset = 0
        if "tailLines" in query:
            lines = data.splitlines(keepends=True)
            offset = len(data) - sum(len(line) for line in lines[len(lines) - int(query["tailLines"]):]) \
                if int(query["tailLines"]) > 0 else len(data)
        if query.get("follow") in ("true", "1", "True"):
            return _follow(path, offset, worker)
        data = data[offset:]
        return data[:int(query["limitBytes"])] if "limitBytes" in query else data


def _follow(path: Path, offset: int, worker: PodWorker | None) -> Iterator[bytes]:
    with path.open("rb") as f:
        f.seek(offset)
        while True:
            data = f.read(65536)
            if data:
                yield data
            elif worker is None or worker.done.is_set():
                yield f.read()
                return
            else:
                time.sleep(0.05)


def _success(resource: str, obj: Obj) -> Obj:
    meta = obj["metadata"]
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": {"name": meta["name"], "group": KINDS[resource].group, "kind": resource, "uid": meta["uid"]}}


# ---------------------------------------------------------------------------------------------- HTTP

ROUTE = re.compile(r"(?P<prefix>/api/v1|/apis/batch/v1)(?:/namespaces/(?P<ns>[^/]+))?/(?P<resource>[a-z]+)"
                   r"(?:/(?P<name>[^/]+)(?:/(?P<sub>[a-z]+))?)?")
VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.0-fake", "gitCommit": "fake", "gitTreeState": "clean",
           "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.23", "compiler": "gc", "platform": "linux/amd64"}


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]

    @property
    def watch(self) -> bool:
        return self.query.get("watch") in ("true", "1", "True")


class ApiHandler(BaseHTTPRequestHandler):
    """HTTP in, Api calls, JSON / text / chunked streams out; every ApiError becomes its Status."""

    protocol_version = "HTTP/1.1"
    cluster: FakeCluster  # bound on a subclass by ApiServer

    def handle(self) -> None:
        with contextlib.suppress(ConnectionError):  # a client that hangs up (a stopped watch) is no error
            super().handle()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.cluster.requests.append(Request(self.command, url.path, query))
        try:
            self.cluster.check_request(self.command, url.path, self.headers.get("Authorization"))
            try:
                body = json.loads(raw) if raw.strip() else {}
            except ValueError as exc:
                raise ApiError(400, "BadRequest", f"invalid JSON body: {exc}") from None
            self._route(url.path, query, body)
        except ApiError as exc:
            self._json(exc.code, exc.status())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_POST = do_DELETE = do_PUT = do_PATCH = do_GET

    def _route(self, path: str, query: dict[str, str], body: Obj) -> None:
        if path.rstrip("/") == "/version":
            return self._json(200, VERSION)
        m = ROUTE.fullmatch(path)
        kind = KINDS.get(m["resource"]) if m else None
        if m is None or kind is None or kind.prefix != m["prefix"] or m["sub"] not in (None, "status", "log") \
                or (m["sub"] == "log" and kind.resource != "pods"):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        api, ns, name, sub, method = self.cluster.api, m["ns"], m["name"], m["sub"], self.command
        if method == "GET" and name is None:
            if query.get("watch") in ("true", "1", "True"):
                return self._watch(kind, ns, query)
            return self._json(200, api.list(kind.resource, ns, query))
        if method == "GET" and sub == "log":
            out = api.read_log(ns, name, query)
            return self._bytes(out) if isinstance(out, bytes) else self._stream(out, "text/plain")
        if method == "GET":
            return self._json(200, api.get(kind.resource, ns, name))
        if method == "POST" and ns and name is None:
            return self._json(201, api.create(kind.resource, ns, body, dry_run="dryRun" in query))
        if method == "DELETE" and ns and sub is None:
            options = {**body, **{k: int(v) if k == "gracePeriodSeconds" else v for k, v in query.items()
                                  if k in ("gracePeriodSeconds", "propagationPolicy")}}
            if name is None:
                return self._json(200, api.delete_collection(kind.resource, ns, query, options))
            out, warnings = api.delete(kind.resource, ns, name, options)
            return self._json(200, out, warnings)
        raise ApiError(405, "MethodNotAllowed", "the fake API server does not allow this method here")

    def _watch(self, kind: Kind, ns: str | None, query: dict[str, str]) -> None:
        match = Selector(kind, ns, query.get("labelSelector", ""), query.get("fieldSelector", ""))
        since = query.get("resourceVersion") or None
        if since is not None and not since.isdigit():
            raise ApiError(400, "BadRequest", f"invalid resource version: {since}")
        deadline = time.monotonic() + float(query.get("timeoutSeconds") or 1800)
        events = self.cluster.store.watch(kind.resource, match, None if since in (None, "0") else int(since),
                                          deadline, self._client_gone)
        self._stream((json.dumps(e).encode() + b"\n" for e in events), "application/json")

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _json(self, code: int, obj: Obj, warnings: list[str] | tuple[()] = ()) -> None:
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for warning in warnings:
            self.send_header("Warning", f'299 - "{warning}"')
        self.end_headers()
        self.wfile.write(data)

    def _bytes(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, chunks: Iterator[bytes], content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for data in chunks:
                if data:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True


class ApiServer:
    def __init__(self, cluster: FakeCluster, host: str = "127.0.0.1", port: int = 0) -> None:
        handler = type("BoundApiHandler", (ApiHandler,), {"cluster": cluster})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://{host}:{self.httpd.server_port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True, name="fake-apiserver")

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
