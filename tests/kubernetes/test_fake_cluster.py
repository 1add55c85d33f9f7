"""The fake cluster, driven only through the official `kubernetes` client (fixtures in conftest.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from tests.kubernetes.conftest import IMAGES, PYTHON_IMAGE, Kube
from tests.kubernetes.fake_cluster import FakeCluster

NS = "default"


def pod_body(name: str, code: str = "pass", *, command: list[str] | None = None, image: str = PYTHON_IMAGE,
             env: list[dict[str, Any]] | None = None, labels: dict[str, str] | None = None,
             memory: str | None = None, **spec: Any) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": image, "command": command or ["python", "-c", code]}
    if env:
        container["env"] = env
    if memory:
        container["resources"] = {"limits": {"cpu": "1", "memory": memory}}
    return {"metadata": {"name": name, "labels": labels or {}},
            "spec": {"restartPolicy": "Never", "containers": [container], **spec}}


def job_body(name: str, code: str = "pass", *, backoff_limit: int = 0, **extra: Any) -> dict[str, Any]:
    template = pod_body("ignored", code, labels={"rivers.io/step": name})
    del template["metadata"]["name"]
    return {"metadata": {"name": name}, "spec": {"backoffLimit": backoff_limit, "template": template, **extra}}


def events_until(list_fn: Callable[..., Any], predicate: Callable[[Any], bool], *, since: str | None = None,
                 timeout: float = 15.0, **kwargs: Any) -> list[tuple[str, Any]]:
    """Watch (resuming across timeouts) until an event's object satisfies `predicate`; every event seen."""
    seen: list[tuple[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        w = watch.Watch()
        args = {"resource_version": since} if since else {}
        for event in w.stream(list_fn, NS, timeout_seconds=max(1, round(deadline - time.monotonic())),
                              **args, **kwargs):
            seen.append((event["type"], event["object"]))
            if predicate(event["object"]) or (predicate is until_deleted and event["type"] == "DELETED"):
                w.stop()
                return seen
        since = w.resource_version
    raise AssertionError(f"no event matched; saw {[(t, o.metadata.name) for t, o in seen]}")


def until_deleted(obj: Any) -> bool:
    """A marker for events_until: stop at the DELETED event."""
    return False


def ended(pod: Any) -> bool:
    return pod.status.phase in ("Succeeded", "Failed")


def waiting(reason: str) -> Callable[[Any], bool]:
    def check(pod: Any) -> bool:
        statuses = pod.status.container_statuses or []
        return bool(statuses and statuses[0].state.waiting and statuses[0].state.waiting.reason == reason)
    return check


def run_pod(kube: Kube, body: dict[str, Any], timeout: float = 15.0) -> tuple[Any, list[tuple[str, Any]]]:
    created = kube.core.create_namespaced_pod(NS, body)
    name = created.metadata.name
    seen = events_until(kube.core.list_namespaced_pod, ended, since=created.metadata.resource_version,
                        field_selector=f"metadata.name={name}", timeout=timeout)
    return seen[-1][1], seen


def terminated(pod: Any) -> tuple[str, str, int]:
    state = pod.status.container_statuses[0].state.terminated
    return pod.status.phase, state.reason, state.exit_code


def api_error(call: Callable[[], Any]) -> tuple[int, dict[str, Any]]:
    with pytest.raises(ApiException) as info:
        call()
    return info.value.status, json.loads(info.value.body) if info.value.body else {}


# ------------------------------------------------------------------------------------------ pods on the kubelet

@pytest.mark.slow
def test_pod_runs_with_exactly_its_env_and_moves_through_the_phases(kube: Kube, fake_cluster: FakeCluster) -> None:
    kube.core.create_namespaced_secret(NS, {"metadata": {"name": "creds"}, "stringData": {"url": "redis://x:6"}})
    env = [{"name": "A", "value": "1"}, {"name": "B", "value": "$(A)-two-$$(A)"},
           {"name": "URL", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "url"}}},
           {"name": "GONE", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}}},
           {"name": "ME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
           {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}}]
    pod, seen = run_pod(kube, pod_body("envy", command=["env"], env=env, labels={"app": "demo"}))

    assert terminated(pod) == ("Succeeded", "Completed", 0)
    phases = [o.status.phase for _, o in seen]
    assert [p for i, p in enumerate(phases) if i == 0 or phases[i - 1] != p] == ["Pending", "Running", "Succeeded"]
    assert pod.spec.node_name == "fake-node" and pod.status.qos_class == "BestEffort"
    assert {c.type: c.status for c in pod.status.conditions}["PodScheduled"] == "True"
    log = kube.core.read_namespaced_pod_log("envy", NS)
    assert dict(line.split("=", 1) for line in log.splitlines()) == {
        "PATH": IMAGES[PYTHON_IMAGE].env["PATH"], "HOSTNAME": "envy", "A": "1", "B": "1-two-$(A)",
        "URL": "redis://x:6", "ME": "envy", "APP": "demo"}


@pytest.mark.slow
@pytest.mark.parametrize(("code", "phase", "reason", "exit_code"), [
    ("print('fine')", "Succeeded", "Completed", 0),
    ("raise SystemExit(3)", "Failed", "Error", 3),
    ("import os, signal; os.kill(os.getpid(), signal.SIGTERM)", "Failed", "Error", 143),
    ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", "Failed", "Error", 137),
])
def test_exit_codes_are_real(kube: Kube, code: str, phase: str, reason: str, exit_code: int) -> None:
    pod, _ = run_pod(kube, pod_body("exit", code))
    assert terminated(pod) == (phase, reason, exit_code)


def test_a_command_that_cannot_start_is_a_start_error(kube: Kube) -> None:
    pod, _ = run_pod(kube, pod_body("nocmd", command=["no-such-command"]))
    assert terminated(pod) == ("Failed", "StartError", 128)
    assert "no-such-command" in pod.status.container_statuses[0].state.terminated.message


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["cgroup", "watchdog"])
def test_memory_limit_kills_for_real(kube: Kube, fake_cluster: FakeCluster, mode: str) -> None:
    if mode == "cgroup" and fake_cluster.cgroup_unavailable:
        pytest.skip(fake_cluster.cgroup_unavailable)
    fake_cluster.set_oom_mode(mode)
    assert fake_cluster.oom_mode == mode
    grow = "chunks = []\nfor _ in range(200): chunks.append(bytearray(8 << 20))\nprint('survived')"
    small = "x = bytearray(8 << 20); print('fits')"
    kube.core.create_namespaced_pod(NS, pod_body("small", small, memory="96Mi"))
    pod, _ = run_pod(kube, pod_body("hog", grow, memory="64Mi"))
    assert terminated(pod) == ("Failed", "OOMKilled", 137)
    assert "survived" not in kube.core.read_namespaced_pod_log("hog", NS)
    events_until(kube.core.list_namespaced_pod, ended, field_selector="metadata.name=small")
    assert terminated(kube.core.read_namespaced_pod("small", NS)) == ("Succeeded", "Completed", 0)
    assert pod.status.qos_class == "Guaranteed"  # requests default to limits


@pytest.mark.slow
def test_missing_secret_or_key_holds_the_pod_until_it_exists(kube: Kube) -> None:
    kube.core.create_namespaced_secret(NS, {"metadata": {"name": "partial"}, "stringData": {"a": "1"}})

    def ref(name: str, key: str, **extra: Any) -> list[dict[str, Any]]:
        return [{"name": "V", "valueFrom": {"secretKeyRef": {"name": name, "key": key, **extra}}}]
    kube.core.create_namespaced_pod(NS, pod_body("nosecret", env=ref("later", "url")))
    kube.core.create_namespaced_pod(NS, pod_body("nokey", env=ref("partial", "url")))
    for name, message in (("nosecret", 'secret "later" not found'),
                          ("nokey", "couldn't find key url in Secret default/partial")):
        seen = events_until(kube.core.list_namespaced_pod, waiting("CreateContainerConfigError"),
                            field_selector=f"metadata.name={name}")
        pod = seen[-1][1]
        assert pod.status.phase == "Pending" and pod.status.container_statuses[0].state.waiting.message == message
    optional, _ = run_pod(kube, pod_body("optional", env=ref("partial", "url", optional=True)))
    assert terminated(optional) == ("Succeeded", "Completed", 0)

    kube.core.create_namespaced_secret(NS, {"metadata": {"name": "later"}, "stringData": {"url": "u"}})
    events_until(kube.core.list_namespaced_pod, ended, field_selector="metadata.name=nosecret")
    assert kube.core.read_namespaced_pod("nokey", NS).status.phase == "Pending"


@pytest.mark.slow
def test_unknown_image_fails_to_pull_until_the_test_provides_it(kube: Kube, fake_cluster: FakeCluster) -> None:
    created = kube.core.create_namespaced_pod(NS, pod_body("pull", image="ghcr.io/x/unknown:1"))
    seen = events_until(kube.core.list_namespaced_pod, waiting("ImagePullBackOff"),
                        since=created.metadata.resource_version, field_selector="metadata.name=pull")
    assert any(waiting("ErrImagePull")(o) for _, o in seen)
    assert all(o.status.phase == "Pending" for _, o in seen)
    status, body = api_error(lambda: kube.core.read_namespaced_pod_log("pull", NS))
    assert status == 400 and "is waiting to start" in body["message"]

    fake_cluster.add_image("ghcr.io/x/unknown:1", {"PATH": IMAGES[PYTHON_IMAGE].env["PATH"]})
    events_until(kube.core.list_namespaced_pod, ended, field_selector="metadata.name=pull")
    assert terminated(kube.core.read_namespaced_pod("pull", NS)) == ("Succeeded", "Completed", 0)


def test_run_as_non_root_is_checked_against_the_image_user(kube: Kube, fake_cluster: FakeCluster) -> None:
    fake_cluster.add_image("root-image:1", user=0)
    body = pod_body("rooted", image="root-image:1", securityContext={"runAsNonRoot": True})
    kube.core.create_namespaced_pod(NS, body)
    seen = events_until(kube.core.list_namespaced_pod, waiting("CreateContainerConfigError"),
                        field_selector="metadata.name=rooted")
    assert "runAsNonRoot and image will run as root" in seen[-1][1].status.container_statuses[0].state.waiting.message


@pytest.mark.slow
def test_holds_keep_pods_pending_with_their_reason(kube: Kube, fake_cluster: FakeCluster) -> None:
    unschedulable = fake_cluster.hold("hold=yes")
    pulling = fake_cluster.hold(lambda pod: pod["metadata"]["name"] == "slow-pull", reason="ErrImagePull",
                                message="rpc error: pull access denied")
    kube.core.create_namespaced_pod(NS, pod_body("held", labels={"hold": "yes"}))
    kube.core.create_namespaced_pod(NS, pod_body("slow-pull"))
    free, _ = run_pod(kube, pod_body("free", labels={"hold": "no"}))
    assert free.status.phase == "Succeeded"

    seen = events_until(kube.core.list_namespaced_pod, lambda p: bool(p.status.conditions),
                        field_selector="metadata.name=held")
    scheduled = seen[-1][1].status.conditions[0]
    assert (scheduled.type, scheduled.status, scheduled.reason) == ("PodScheduled", "False", "Unschedulable")
    assert seen[-1][1].status.container_statuses is None and seen[-1][1].spec.node_name is None
    seen = events_until(kube.core.list_namespaced_pod, waiting("ErrImagePull"),
                        field_selector="metadata.name=slow-pull")
    assert seen[-1][1].status.container_statuses[0].state.waiting.message == "rpc error: pull access denied"

    unschedulable.release()
    with pulling:
        events_until(kube.core.list_namespaced_pod, ended, field_selector="metadata.name=held")
        assert kube.core.read_namespaced_pod("slow-pull", NS).status.phase == "Pending"
    events_until(kube.core.list_namespaced_pod, ended, field_selector="metadata.name=slow-pull")


@pytest.mark.slow
def test_peak_of_concurrently_running_pods_is_recorded(kube: Kube, fake_cluster: FakeCluster) -> None:
    def step(i: int) -> str:  # a toy launcher: one pod at a time per slot
        pod, _ = run_pod(kube, pod_body(f"capped-{i}", "import time; time.sleep(0.3)"))
        return pod.status.phase

    with ThreadPoolExecutor(max_workers=2) as pool:  # the cap
        assert set(pool.map(step, range(5))) == {"Succeeded"}
    assert (fake_cluster.peak_running, fake_cluster.peak_pods) == (2, 2)
    fake_cluster.reset_peaks()
    assert fake_cluster.peak_running == 0


# ------------------------------------------------------------------------------------------ jobs

@pytest.mark.slow
def test_job_runs_its_pod_and_mirrors_success(kube: Kube) -> None:
    job = kube.batch.create_namespaced_job(NS, job_body("ok", "print('done')"))
    uid = job.metadata.uid
    assert job.spec.selector.match_labels == {"batch.kubernetes.io/controller-uid": uid}
    seen = events_until(kube.batch.list_namespaced_job, lambda j: bool(j.status.succeeded),
                        since=job.metadata.resource_version)
    done = seen[-1][1]
    assert [(c.type, c.status) for c in done.status.conditions] == [("SuccessCriteriaMet", "True"),
                                                                    ("Complete", "True")]
    assert done.status.completion_time is not None and done.status.active == 0
    (pod,) = kube.core.list_namespaced_pod(NS, label_selector=f"controller-uid={uid}").items
    assert pod.metadata.name.startswith("ok-") and pod.metadata.labels["job-name"] == "ok"
    assert pod.metadata.labels["rivers.io/step"] == "ok"
    assert pod.metadata.labels["batch.kubernetes.io/controller-uid"] == uid
    owner = pod.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.uid, owner.controller) == ("Job", "ok", uid, True)
    assert kube.core.read_namespaced_pod_log(pod.metadata.name, NS) == "done\n"


@pytest.mark.slow
@pytest.mark.parametrize("backoff_limit", [0, 1])
def test_job_fails_after_its_backoff_limit(kube: Kube, backoff_limit: int) -> None:
    job = kube.batch.create_namespaced_job(NS, job_body("bad", "raise SystemExit(2)", backoff_limit=backoff_limit))
    seen = events_until(kube.batch.list_namespaced_job,
                        lambda j: any(c.type == "Failed" for c in j.status.conditions or []),
                        since=job.metadata.resource_version)
    failed = seen[-1][1]
    assert failed.status.failed == backoff_limit + 1 and not failed.status.succeeded
    condition = next(c for c in failed.status.conditions if c.type == "Failed")
    assert (condition.status, condition.reason) == ("True", "BackoffLimitExceeded")
    pods = kube.core.list_namespaced_pod(NS, label_selector="job-name=bad").items
    assert len(pods) == backoff_limit + 1
    assert {terminated(p) for p in pods} == {("Failed", "Error", 2)}


@pytest.mark.slow
def test_ttl_after_finished_deletes_the_job_and_its_pod(kube: Kube) -> None:
    job = kube.batch.create_namespaced_job(NS, job_body("brief", ttlSecondsAfterFinished=0))
    events_until(kube.batch.list_namespaced_job, until_deleted, since=job.metadata.resource_version)
    deadline = time.monotonic() + 5
    while kube.core.list_namespaced_pod(NS, label_selector="job-name=brief").items:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def _running_job(kube: Kube, fake_cluster: FakeCluster, name: str) -> tuple[Any, Any, Any]:
    job = kube.batch.create_namespaced_job(NS, job_body(name, "import time; time.sleep(60)"))
    seen = events_until(kube.core.list_namespaced_pod, lambda p: p.status.phase == "Running",
                        label_selector=f"job-name={name}")
    pod = seen[-1][1]
    process = fake_cluster.process(NS, pod.metadata.name)
    assert process is not None and process.is_running()
    return job, pod, process


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["Background", "Foreground"])
def test_deleting_a_job_deletes_its_pod_and_kills_the_process(kube: Kube, fake_cluster: FakeCluster,
                                                              policy: str) -> None:
    job, pod, process = _running_job(kube, fake_cluster, "doomed")
    response = kube.batch.delete_namespaced_job("doomed", NS, propagation_policy=policy)
    if policy == "Foreground":  # the Job stays, marked, until its pods are gone
        assert response["metadata"]["deletionTimestamp"]
    seen = events_until(kube.core.list_namespaced_pod, until_deleted, since=job.metadata.resource_version,
                        field_selector=f"metadata.name={pod.metadata.name}")
    ends = [o for t, o in seen if t == "MODIFIED" and o.status.phase == "Failed"]
    assert ends and terminated(ends[-1]) == ("Failed", "Error", 143)  # SIGTERM, then gone
    process.wait(5)
    deadline = time.monotonic() + 5
    while kube.batch.list_namespaced_job(NS).items:
        assert time.monotonic() < deadline
        time.sleep(0.02)


@pytest.mark.slow
def test_deleting_a_job_without_a_policy_orphans_its_pod(kube: Kube, fake_cluster: FakeCluster) -> None:
    _, pod, process = _running_job(kube, fake_cluster, "orphaning")
    kube.batch.delete_namespaced_job("orphaning", NS)  # batch/v1's default is Orphan, as in a real cluster
    orphan = kube.core.read_namespaced_pod(pod.metadata.name, NS)
    assert orphan.status.phase == "Running" and not orphan.metadata.owner_references
    assert process.is_running()


@pytest.mark.slow
def test_deleting_a_running_pod_kills_it_and_emits_deleted(kube: Kube, fake_cluster: FakeCluster) -> None:
    up = "import signal, time; print('up', flush=True); time.sleep(60)"
    trap = up.replace("print", "signal.signal(signal.SIGTERM, lambda *a: None); print")
    for name, code, grace, exit_code in (("polite", up, None, 143), ("stubborn", trap, 1, 137),
                                         ("forced", trap, 0, None)):
        created = kube.core.create_namespaced_pod(NS, pod_body(name, code))
        events_until(kube.core.list_namespaced_pod, lambda p: p.status.phase == "Running",
                     field_selector=f"metadata.name={name}")
        deadline = time.monotonic() + 10
        while kube.core.read_namespaced_pod_log(name, NS) != "up\n":  # its SIGTERM handler is in place
            assert time.monotonic() < deadline
            time.sleep(0.01)
        process = fake_cluster.process(NS, name)
        assert process is not None
        deleted = kube.core.delete_namespaced_pod(name, NS, grace_period_seconds=grace)
        assert (deleted.metadata.deletion_timestamp is not None) == bool(grace is None or grace)
        seen = events_until(kube.core.list_namespaced_pod, until_deleted, since=created.metadata.resource_version,
                            field_selector=f"metadata.name={name}")
        if exit_code is not None:
            assert terminated(seen[-1][1])[2] == exit_code
        process.wait(5)
        status, body = api_error(lambda n=name: kube.core.read_namespaced_pod(n, NS))
        assert status == 404 and body["reason"] == "NotFound"


@pytest.mark.slow
def test_a_job_whose_pod_is_deleted_fails(kube: Kube, fake_cluster: FakeCluster) -> None:
    job, pod, process = _running_job(kube, fake_cluster, "interrupted")
    kube.core.delete_namespaced_pod(pod.metadata.name, NS, grace_period_seconds=0)
    seen = events_until(kube.batch.list_namespaced_job, lambda j: bool(j.status.failed),
                        since=job.metadata.resource_version)
    assert seen[-1][1].status.conditions[-1].type == "Failed"
    process.wait(5)


# ------------------------------------------------------------------------------------------ watch and list

def test_watch_resumes_from_a_resource_version_and_times_out(kube: Kube, fake_cluster: FakeCluster) -> None:
    fake_cluster.hold()  # nothing starts: only our own changes make events
    kube.core.create_namespaced_pod(NS, pod_body("w1"))
    rv = kube.core.list_namespaced_pod(NS).metadata.resource_version
    kube.core.create_namespaced_pod(NS, pod_body("w2"))
    kube.core.create_namespaced_pod(NS, pod_body("w3"))
    started = time.monotonic()
    events = list(watch.Watch().stream(kube.core.list_namespaced_pod, NS, resource_version=rv, timeout_seconds=1))
    assert 0.9 < time.monotonic() - started < 3
    assert [e["object"].metadata.name for e in events if e["type"] == "ADDED"] == ["w2", "w3"]
    w = watch.Watch()
    initial = [(e["type"], e["object"].metadata.name)
               for _, e in zip(range(3), w.stream(kube.core.list_namespaced_pod, NS), strict=False)]
    w.stop()
    assert sorted(initial) == [("ADDED", "w1"), ("ADDED", "w2"), ("ADDED", "w3")]  # no version: current state
    assert [r.query.get("resourceVersion") for r in fake_cluster.requests if r.watch] == [rv, None]


def test_watch_expiry_resumes_once_and_a_compacted_version_is_410(kube: Kube, fake_cluster: FakeCluster) -> None:
    fake_cluster.hold()
    kube.core.create_namespaced_pod(NS, pod_body("e1"))
    w = watch.Watch()
    names = []
    for event in w.stream(kube.core.list_namespaced_pod, NS):  # no timeout: the client resumes after a 410
        names.append((event["type"], event["object"].metadata.name))
        if names == [("ADDED", "e1")]:
            fake_cluster.expire_watches()
            kube.core.create_namespaced_pod(NS, pod_body("e2"))
        if ("ADDED", "e2") in names:
            w.stop()
    watches = [r for r in fake_cluster.requests if r.watch]
    assert len(watches) == 2 and watches[1].query["resourceVersion"]  # resumed where it was

    old = kube.core.list_namespaced_pod(NS).metadata.resource_version
    kube.core.create_namespaced_pod(NS, pod_body("e3"))
    fake_cluster.compact()
    with pytest.raises(ApiException) as info:
        list(watch.Watch().stream(kube.core.list_namespaced_pod, NS, resource_version=old, timeout_seconds=5))
    assert info.value.status == 410 and "too old resource version" in info.value.reason
    with pytest.raises(ApiException) as info:  # expired, and the resume is compacted too: the launcher's problem
        for _ in watch.Watch().stream(kube.core.list_namespaced_pod, NS):
            fake_cluster.compact()
            fake_cluster.expire_watches()
    assert info.value.status == 410


def test_selectors_on_lists_and_watches(kube: Kube, fake_cluster: FakeCluster) -> None:
    hold = fake_cluster.hold()
    for name, labels in (("a", {"app": "a", "tier": "x"}), ("b", {"app": "b"}), ("c", {"app": "c"})):
        kube.core.create_namespaced_pod(NS, pod_body(name, labels=labels))
    kube.core.create_namespaced_pod("other", pod_body("d", labels={"app": "a"}))

    def names(**kwargs: Any) -> set[str]:
        return {p.metadata.name for p in kube.core.list_namespaced_pod(NS, **kwargs).items}
    assert names(label_selector="app=a") == {"a"}
    assert names(label_selector="app!=a") == {"b", "c"}
    assert names(label_selector="app in (a, b),!tier") == {"b"}
    assert names(label_selector="app notin (a)") == {"b", "c"}
    assert names(label_selector="tier") == {"a"}
    assert names(field_selector="metadata.name=c") == {"c"}
    assert names(field_selector="status.phase=Pending,metadata.name!=a") == {"b", "c"}
    everywhere = kube.core.list_pod_for_all_namespaces(label_selector="app=a").items
    assert {(p.metadata.namespace, p.metadata.name) for p in everywhere} == {(NS, "a"), ("other", "d")}
    status, body = api_error(lambda: kube.core.list_namespaced_pod(NS, field_selector="spec.foo=1"))
    assert status == 400 and body["message"] == "field label not supported: spec.foo"

    rv = kube.core.list_namespaced_pod(NS).metadata.resource_version
    fake_cluster.add_image("never:1")  # unknown images can't start: scheduling is the only change
    kube.core.create_namespaced_pod(NS, pod_body("late", image="nowhere:1"))
    hold.release()
    seen = events_until(kube.core.list_namespaced_pod, lambda p: p.metadata.name == "late", since=rv,
                        field_selector="spec.nodeName=fake-node")
    assert seen[-1][0] == "ADDED"  # entering the selection is ADDED, as with a real API server


def test_validation_conflicts_and_not_found(kube: Kube, fake_cluster: FakeCluster) -> None:
    fake_cluster.hold()
    invalid = [
        (kube.core.create_namespaced_pod, pod_body("Step_A"), "metadata.name", "RFC 1123 subdomain"),
        (kube.core.create_namespaced_pod, pod_body("ok", labels={"step": "a/b"}), "metadata.labels", "valid label"),
        (kube.core.create_namespaced_pod, pod_body("ok", labels={"step": "x" * 64}), "metadata.labels", "63"),
        (kube.core.create_namespaced_pod, pod_body("ok", memory="lots"), "limits[memory]", "quantities"),
        (kube.batch.create_namespaced_job, job_body("j" * 64), "metadata.name", "63 characters"),
    ]
    template_always = job_body("always")
    template_always["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    invalid.append((kube.batch.create_namespaced_job, template_always, "restartPolicy", "Unsupported value"))
    greedy = pod_body("greedy", memory="1Gi")
    greedy["spec"]["containers"][0]["resources"]["requests"] = {"memory": "2Gi"}
    invalid.append((kube.core.create_namespaced_pod, greedy, "requests", "less than or equal to memory limit"))
    for create, body, path, text in invalid:
        status, error = api_error(lambda c=create, b=body: c(NS, b))
        assert (status, error["reason"]) == (422, "Invalid") and path in error["message"] and text in error["message"]

    kube.core.create_namespaced_pod(NS, pod_body("dup"))
    status, error = api_error(lambda: kube.core.create_namespaced_pod(NS, pod_body("dup")))
    assert (status, error["reason"], error["message"]) == (409, "AlreadyExists", 'pods "dup" already exists')
    for call, message in ((lambda: kube.core.read_namespaced_pod("gone", NS), 'pods "gone" not found'),
                          (lambda: kube.core.delete_namespaced_pod("gone", NS), 'pods "gone" not found'),
                          (lambda: kube.core.read_namespaced_pod_log("gone", NS), 'pods "gone" not found'),
                          (lambda: kube.batch.read_namespaced_job("gone", NS), 'jobs.batch "gone" not found'),
                          (lambda: kube.core.read_namespaced_secret("gone", NS), 'secrets "gone" not found')):
        status, error = api_error(call)
        assert (status, error["reason"], error["message"]) == (404, "NotFound", message)

    generated = kube.core.create_namespaced_pod(NS, {**pod_body(""), "metadata": {"generateName": "gen-"}})
    assert generated.metadata.name.startswith("gen-") and len(generated.metadata.name) == 9
    dry = kube.core.create_namespaced_pod(NS, pod_body("dry"), dry_run="All")
    assert dry.metadata.uid and not kube.core.list_namespaced_pod(NS, field_selector="metadata.name=dry").items


def test_secrets_store_base64_and_delete(kube: Kube) -> None:
    kube.core.create_namespaced_secret(NS, client.V1Secret(metadata=client.V1ObjectMeta(name="s"),
                                                           string_data={"url": "redis://h"}))
    secret = kube.core.read_namespaced_secret("s", NS)
    assert secret.data == {"url": "cmVkaXM6Ly9o"} and secret.type == "Opaque"
    assert kube.core.delete_namespaced_secret("s", NS)["status"] == "Success"
    status, _ = api_error(lambda: kube.core.create_namespaced_secret(NS, {"metadata": {"name": "t"},
                                                                          "data": {"k": "not base64!"}}))
    assert status == 422


def test_auth_version_and_injected_errors(kube: Kube, fake_cluster: FakeCluster) -> None:
    assert client.VersionApi(kube.api_client).get_code().git_version == "v1.32.0-fake"
    anonymous = client.CoreV1Api(client.ApiClient(client.Configuration(host=fake_cluster.url)))
    status, error = api_error(lambda: anonymous.list_namespaced_pod(NS))
    assert (status, error["reason"]) == (401, "Unauthorized")
    anonymous.api_client.close()

    fake_cluster.hold()
    fake_cluster.inject_error("POST", r"/pods$", code=500, times=1)
    status, error = api_error(lambda: kube.core.create_namespaced_pod(NS, pod_body("flaky")))
    assert (status, error["reason"]) == (500, "InternalError")
    assert kube.core.create_namespaced_pod(NS, pod_body("flaky")).metadata.name == "flaky"


@pytest.mark.slow
def test_logs_tail_and_follow(kube: Kube) -> None:
    code = "import time\nfor i in range(5):\n    print(i, flush=True); time.sleep(0.05)"
    kube.core.create_namespaced_pod(NS, pod_body("talker", code))
    events_until(kube.core.list_namespaced_pod, lambda p: p.status.phase == "Running",
                 field_selector="metadata.name=talker")
    stream = kube.core.read_namespaced_pod_log("talker", NS, follow=True, _preload_content=False)
    assert stream.data.decode() == "0\n1\n2\n3\n4\n"  # follow reads until the container ends
    assert kube.core.read_namespaced_pod_log("talker", NS, tail_lines=2) == "3\n4\n"
    assert kube.core.read_namespaced_pod_log("talker", NS, limit_bytes=3) == "0\n1"


@pytest.mark.slow
def test_reset_kills_every_pod_process(kube: Kube, fake_cluster: FakeCluster) -> None:
    kube.batch.create_namespaced_job(NS, job_body("sleeper", "import time; time.sleep(60)"))
    events_until(kube.core.list_namespaced_pod, lambda p: p.status.phase == "Running",
                 label_selector="job-name=sleeper")
    (pod,) = kube.core.list_namespaced_pod(NS).items
    process = fake_cluster.process(NS, pod.metadata.name)
    assert process is not None
    assert fake_cluster.reset() == []
    assert not process.is_running() and not kube.batch.list_namespaced_job(NS).items
