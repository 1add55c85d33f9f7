"""The pod launcher end to end: a real Redis, the fake cluster's API server and kubelet, real step pods."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from kubernetes import watch

import rivers as rs
from rivers.kubernetes.manifests import job_name
from rivers.queues import keys
from tests.conftest import Background, WorkerProcesses
from tests.kubernetes.conftest import Kube
from tests.kubernetes.fake_cluster import FakeCluster
from tests.kubernetes.launcher_fixtures import Launchers, launchers_on
from tests.pipelines import distributed_pipeline as dp
from tests.pipelines import kubernetes_pipeline as kp
from tests.pipelines.distributed_graph_pipeline import Pids
from tests.redis_server import wait_for

pytestmark = pytest.mark.slow


class JobLog:
    """Every Job created in a namespace, as the API server handed it out (a watch through the official client)."""

    def __init__(self, kube: Kube, namespace: str = "default") -> None:
        self.created: list[dict[str, Any]] = []
        self._watch = watch.Watch()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(kube, namespace), daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    def _run(self, kube: Kube, namespace: str) -> None:
        listing = kube.batch.list_namespaced_job(namespace)
        self._ready.set()
        try:
            for event in self._watch.stream(kube.batch.list_namespaced_job, namespace,
                                            resource_version=listing.metadata.resource_version):
                if event["type"] == "ADDED":
                    self.created.append(kube.api_client.sanitize_for_serialization(event["object"]))
        except Exception:
            if not self._watch._stop:
                raise

    def names(self) -> list[str]:
        return [job["metadata"]["name"] for job in self.created]

    def close(self) -> None:
        self._watch.stop()
        self._thread.join(5)


@pytest.fixture
def job_log(kube: Kube) -> Iterator[JobLog]:
    log = JobLog(kube)
    yield log
    log.close()


def events(launchers: Launchers, name: str) -> list[dict[str, Any]]:
    found = []
    for line in launchers.logs().splitlines():
        if line.startswith("{") and f'"{name}"' in line:
            entry = json.loads(line)
            if entry.get("event") == name:
                found.append(entry)
    return found


def test_steps_run_as_pods_and_pass_values(launchers: Launchers, fake_cluster: FakeCluster, job_log: JobLog,
                                           tmp_path: Path) -> None:
    launchers.start()
    repo = dp.make_repo([dp.source, dp.doubled, dp.pid], tmp_path, default_executor=rs.Executor.kubernetes())
    result = Background(repo).wait(120)
    assert result.success, (result.failed_assets, launchers.logs())
    assert repo.load_node("doubled") == 42
    assert len(job_log.names()) == 3 and all(name.startswith("rivers-step-") for name in job_log.names())
    wait_for(lambda: not fake_cluster.jobs("default"), 10, message="succeeded Jobs to be deleted")
    # the launcher watched its pods: one list, then watches resumed from a resourceVersion, never a polling loop
    pod_lists = [r for r in fake_cluster.requests if r.method == "GET" and r.path.endswith("/pods")]
    watches = [r for r in pod_lists if r.query.get("watch") in ("true", "True", "1")]
    assert watches and len(pod_lists) - len(watches) <= 2, pod_lists


def test_job_and_pod_specs_field_by_field(launchers: Launchers, fake_cluster: FakeCluster, kube: Kube,
                                          tmp_path: Path) -> None:
    launchers.start()
    executor = rs.Executor.kubernetes(worker_cpu="250m", worker_memory="300Mi", service_account="steps")
    repo = dp.make_repo([dp.source], tmp_path, default_executor=executor)
    with fake_cluster.hold():
        run = Background(repo)
        wait_for(lambda: fake_cluster.pods("default", "rivers.io/component=step-worker"), 60,
                 message="the step's pod")
        job = fake_cluster.jobs("default")[0]
        pod = fake_cluster.pods("default", "rivers.io/component=step-worker")[0]
    result = run.wait(120)
    assert result.success, launchers.logs()
    run_id = result.run_id
    client = redis.Redis.from_url(launchers.url)
    job_id = client.hget(keys.run_jobs_key(run_id), "source").decode()
    assert job["metadata"]["name"] == job_name(run_id, "source", 1)
    assert job["metadata"]["name"] == f"rivers-step-{run_id.replace('-', '')[:8]}-{job['metadata']['name'][-8:]}"
    labels = {"rivers.io/run-id": run_id, "rivers.io/step": "source", "rivers.io/attempt": "1",
              "rivers.io/component": "step-worker"}
    assert labels.items() <= job["metadata"]["labels"].items()
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["ttlSecondsAfterFinished"] > 0
    spec = pod["spec"]
    assert labels.items() <= pod["metadata"]["labels"].items()
    assert spec["restartPolicy"] == "Never" and spec["serviceAccountName"] == "steps"
    assert spec["automountServiceAccountToken"] is False
    [container] = spec["containers"]
    assert container["name"] == "step" and container["image"] == "rivers-worker:test"
    assert container["command"] == ["rivers-worker", "--executor", "kubernetes", "--step", job_id]
    assert container["resources"] == {"requests": {"cpu": "250m", "memory": "300Mi"},
                                      "limits": {"cpu": "250m", "memory": "300Mi"}}
    env = {item["name"]: item for item in container["env"]}
    assert env["RIVERS_REDIS_URL"]["valueFrom"] == {"secretKeyRef": {"name": "rivers-redis", "key": "url"}}
    assert env["RIVERS_SECRET"]["valueFrom"] == {"secretKeyRef": {"name": "rivers-secret", "key": "secret",
                                                                  "optional": True}}
    assert env["RIVERS_RUN_ID"]["value"] == run_id and env["RIVERS_STEP_ATTEMPT"]["value"] == "1"
    assert launchers.url not in json.dumps(pod)  # the Redis URL only through the Secret
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True


def test_mixed_executors_in_one_run(launchers: Launchers, workers: WorkerProcesses, redis_url: str,
                                    tmp_path: Path) -> None:
    launchers.start()
    workers.start(redis_url, concurrency=1)
    repo = dp.make_repo([kp.here, kp.on_worker, kp.in_pod], tmp_path)
    result = Background(repo).wait(120)
    assert result.success, (result.failed_assets, launchers.logs())
    here, on_worker, in_pod = repo.load_node("in_pod")
    import os

    assert here == os.getpid()
    assert len({here, on_worker, in_pod}) == 3  # the coordinator's process, a worker's step process, a pod
    assert on_worker in {child.pid for process in workers.processes for child in workers.tree(process)}


def test_the_cap_holds_whatever_the_launchers(launchers: Launchers, fake_cluster: FakeCluster,
                                              tmp_path: Path) -> None:
    from tests.pipelines import kubernetes_cap_pipeline as cap

    launchers.start()
    launchers.start()
    repo = cap.repo_in(tmp_path, rs.Executor.kubernetes(max_concurrent_steps=3))
    fake_cluster.reset_peaks()
    result = Background(repo).wait(180)
    assert result.success, (result.failed_assets, launchers.logs())
    assert fake_cluster.peak_pods == 3  # never more, and the cap was used
    assert len(events(launchers, "launcher.job_created")) == cap.WIDTH


def test_out_of_memory_is_retried_with_more_memory(launchers: Launchers, fake_cluster: FakeCluster, job_log: JobLog,
                                                   tmp_path: Path) -> None:
    launchers.start()
    repo = dp.make_repo([kp.hungry], tmp_path, default_executor=rs.Executor.kubernetes())
    result = Background(repo).wait(180)
    assert result.success, (result.failed_assets, launchers.logs())
    assert repo.load_node("hungry") == kp.HUNGRY_MB
    first, second = job_log.created
    assert second["metadata"]["name"] == first["metadata"]["name"] + "-r2"
    memory = [job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
              for job in job_log.created]
    assert memory == ["128Mi", "256Mi"]
    # the OOMKilled attempt's Job is kept for inspection, with its pod's reason
    pod = fake_cluster.pods("default", "rivers.io/attempt=1")[0]
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["reason"] == "OOMKilled"
    [failure] = events(launchers, "launcher.step_failed")
    assert failure["reason"] == "out_of_memory" and "OOMKilled" in failure["error"]
    assert "memory limit of 128Mi" in failure["error"]
    # the failure reported for the attempt carries the pod's last log lines: what the step printed before it died
    assert f"last lines of the log of pod {pod['metadata']['name']}:" in failure["error"]
    assert f"hungry: allocating {kp.HUNGRY_MB} MB" in failure["error"]
    assert any(entry.message == f"hungry: allocating {kp.HUNGRY_MB} MB"
               for entry in result.step_results["hungry"].logs)  # and the successful attempt's capture has it too
    assert len(dp.Scratch(dir=str(tmp_path / "scratch")).lines("hungry")) == 2


def test_a_failing_step_keeps_its_exception(launchers: Launchers, tmp_path: Path) -> None:
    launchers.start()
    repo = dp.make_repo([dp.source, dp.broken], tmp_path, default_executor=rs.Executor.kubernetes())
    result = Background(repo).wait(120)
    assert dict(result.failed_assets) == {"broken": "ValueError: boom from a worker (21)"}
    assert result.step_results["broken"].attempt == 1  # the step's own error: no infrastructure retry
    assert result.step_results["broken"].error.reason == "error"
    assert not events(launchers, "launcher.step_failed")  # the pod reported it, the launcher had nothing to add


def test_an_image_that_never_starts_fails_with_its_reason(launchers: Launchers, tmp_path: Path) -> None:
    launchers.start("--start-timeout", "1.5")
    repo = dp.make_repo([kp.never_starts], tmp_path,
                        default_executor=rs.Executor.kubernetes(worker_image="registry.invalid/nosuch:1"))
    result = Background(repo).wait(120)
    [(name, message)] = result.failed_assets
    assert name == "never_starts"
    assert "pod never started: " in message and ("ErrImagePull" in message or "ImagePullBackOff" in message), message
    assert result.step_results["never_starts"].error.reason == "infrastructure"


def test_an_unschedulable_pod_fails_with_the_schedulers_reason(launchers: Launchers, fake_cluster: FakeCluster,
                                                               tmp_path: Path) -> None:
    launchers.start("--start-timeout", "1.5")
    repo = dp.make_repo([kp.never_starts], tmp_path, default_executor=rs.Executor.kubernetes())
    with fake_cluster.hold():
        result = Background(repo).wait(120)
    [(_, message)] = result.failed_assets
    assert "pod never started: Unschedulable: 0/1 nodes are available: 1 Insufficient memory." in message
    wait_for(lambda: not fake_cluster.jobs("default"), 10, message="the never-started Job to be deleted")


@pytest.mark.parametrize("deleted", ["pod", "job"])
def test_a_pod_deleted_mid_step_is_retried(launchers: Launchers, fake_cluster: FakeCluster, kube: Kube,
                                           job_log: JobLog, tmp_path: Path, deleted: str) -> None:
    launchers.start()
    repo = dp.make_repo([dp.source, dp.stalls_once], tmp_path, default_executor=rs.Executor.kubernetes())
    scratch = dp.Scratch(dir=str(tmp_path / "scratch"))
    run = Background(repo)
    wait_for(lambda: scratch.lines("stalls_once"), 90, message="the stalling step to start in its pod")
    [pod] = [p for p in fake_cluster.pods("default") if p["status"]["phase"] == "Running"]
    if deleted == "pod":
        kube.core.delete_namespaced_pod(pod["metadata"]["name"], "default", grace_period_seconds=0)
    else:  # as `kubectl delete job` does: its pods go with it
        owner = pod["metadata"]["ownerReferences"][0]["name"]
        kube.batch.delete_namespaced_job(owner, "default", propagation_policy="Background")
    result = run.wait(120)
    assert result.success, (result.failed_assets, launchers.logs())
    assert repo.load_node("stalls_once") == 22 and len(scratch.lines("stalls_once")) == 2
    assert result.step_results["stalls_once"].attempt == 2
    [failure] = events(launchers, "launcher.step_failed")
    assert "was deleted" in failure["error"]
    assert len(job_log.names()) == 3 and job_log.names()[2] == job_log.names()[1] + "-r2"


def test_a_killed_launcher_is_replaced_and_its_running_pods_adopted(launchers: Launchers, fake_cluster: FakeCluster,
                                                                    job_log: JobLog, tmp_path: Path) -> None:
    first = launchers.start()
    repo = dp.make_repo([dp.source, dp.gated, dp.after_gated], tmp_path, default_executor=rs.Executor.kubernetes())
    scratch = dp.Scratch(dir=str(tmp_path / "scratch"))
    run = Background(repo)
    wait_for(lambda: scratch.lines("gated"), 90, message="the gated step to run in its pod")
    launchers.kill(first)
    launchers.start()
    wait_for(lambda: events(launchers, "launcher.adopted"), 30, message="the new launcher to adopt the pod")
    (tmp_path / "scratch" / "open").touch()
    result = run.wait(120)
    assert result.success, (result.failed_assets, launchers.logs())
    assert len(scratch.lines("gated")) == 1 and result.step_results["gated"].attempt == 1
    assert len(job_log.names()) == len(set(job_log.names())) == 3  # one Job per step: none doubled, none retried


def test_a_launcher_killed_before_its_pod_started_is_adopted_without_a_second_job(
        launchers: Launchers, fake_cluster: FakeCluster, job_log: JobLog, tmp_path: Path) -> None:
    first = launchers.start()
    repo = dp.make_repo([dp.source], tmp_path, default_executor=rs.Executor.kubernetes())
    scratch = dp.Scratch(dir=str(tmp_path / "scratch"))
    with fake_cluster.hold():
        run = Background(repo)
        wait_for(lambda: fake_cluster.pods("default"), 60, message="the held pod")
        launchers.kill(first)
        launchers.start()
        wait_for(lambda: events(launchers, "launcher.adopted"), 30, message="the new launcher to adopt the Job")
    result = run.wait(120)
    assert result.success, (result.failed_assets, launchers.logs())
    assert len(scratch.lines("source")) == 1 and result.step_results["source"].attempt == 1
    assert len(job_log.names()) == 1


def test_sigterm_hands_back_steps_no_pod_took_over(launchers: Launchers, fake_cluster: FakeCluster, job_log: JobLog,
                                                   tmp_path: Path) -> None:
    first = launchers.start()
    repo = dp.make_repo([dp.source], tmp_path, default_executor=rs.Executor.kubernetes())
    with fake_cluster.hold():
        run = Background(repo)
        wait_for(lambda: fake_cluster.pods("default"), 60, message="the held pod")
        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 0
        assert events(launchers, "launcher.handed_back")
        wait_for(lambda: not fake_cluster.jobs("default"), 10, message="the handed-back step's Job to go")
    launchers.start()
    result = run.wait(120)
    assert result.success, (result.failed_assets, launchers.logs())
    assert len(dp.Scratch(dir=str(tmp_path / "scratch")).lines("source")) == 1


def test_an_expired_watch_is_listed_again(launchers: Launchers, fake_cluster: FakeCluster, tmp_path: Path) -> None:
    launchers.start()
    repo = dp.make_repo([dp.source, dp.doubled], tmp_path, default_executor=rs.Executor.kubernetes())
    with fake_cluster.hold():
        run = Background(repo)
        wait_for(lambda: fake_cluster.pods("default"), 60, message="the held pod")
        fake_cluster.compact()
        fake_cluster.expire_watches()
        wait_for(lambda: events(launchers, "launcher.watch_expired"), 30, message="the launcher to list again")
    result = run.wait(120)
    assert result.success, (result.failed_assets, launchers.logs())


def test_a_graph_runs_in_one_pod_and_fan_out_instances_are_capped_pods(launchers: Launchers,
                                                                       fake_cluster: FakeCluster,
                                                                       tmp_path: Path) -> None:
    launchers.start()
    pids_dir = tmp_path / "pids"
    pids_dir.mkdir()
    repo = rs.CodeRepository([kp.k_fused, kp.k_items, kp.k_fanned], default_io_handler=dp.handler_for(tmp_path),
                             resources={"pids": Pids(directory=str(pids_dir))},
                             default_executor=rs.Executor.kubernetes(max_concurrent_steps=2))
    fake_cluster.reset_peaks()
    result = Background(repo).wait(180)
    assert result.success, (result.failed_assets, launchers.logs())
    assert repo.load_node("k_fused") == 2 and repo.load_node("k_fanned") == sum(i * i for i in range(6))
    found = Pids(directory=str(pids_dir)).read()
    assert len(found["k_fused/k_first"] | found["k_fused/k_second"]) == 1  # both tasks in the graph's one pod
    assert len(found["k_fanned/k_square"]) == 6  # each instance its own pod
    assert Pids(directory=str(pids_dir)).peak() <= 2 and fake_cluster.peak_pods <= 2


@pytest.mark.parametrize("signing", ["unsigned", "mis-signed"])
def test_with_a_secret_a_forged_job_creates_no_pod(launchers: Launchers, fake_cluster: FakeCluster, redis_url: str,
                                                   signing: str) -> None:
    """A job the launcher cannot verify is refused before anything reaches the cluster: no Job, no pod."""
    from rivers.distributed.jobs import job_fields

    launchers.start(env={"RIVERS_SECRET": "the-deployment-secret"})
    client = redis.Redis.from_url(redis_url)
    spec = json.dumps({"run_id": "forged", "step_key": "evil", "attempt": 1, "outputs": [],
                       "pod": {"image": "attacker/image:latest", "service_account": "cluster-admin"}})
    key = None if signing == "unsigned" else b"another-secret"
    client.hset(keys.job_key("forged-1"), mapping=job_fields("forged-1", spec, "rivers:run:forged:results",
                                                            keys.queue_name("kubernetes"), "forged", key))
    client.rpush(keys.queue_key("kubernetes"), "forged-1")
    wait_for(lambda: client.hget(keys.job_key("forged-1"), keys.JOB_STATUS) == b"failed", 30,
             message="the forged job to be refused")
    assert b"sign" in client.hget(keys.job_key("forged-1"), keys.JOB_EXC_INFO)
    assert not fake_cluster.jobs() and not fake_cluster.pods()
    assert not [r for r in fake_cluster.requests if r.method == "POST"]
    assert not client.llen("rivers:run:forged:results")  # its sender cannot be trusted with a report


def test_a_step_whose_module_crashes_its_pod_fails_naming_the_signal(launchers: Launchers, fake_cluster: FakeCluster,
                                                                    tmp_path: Path) -> None:
    from tests.kubernetes.conftest import IMAGES, WORKER_IMAGE
    from tests.pipelines import import_segv

    armed = IMAGES[WORKER_IMAGE]
    fake_cluster.add_image("rivers-worker:armed", env={**armed.env, "IMPORT_CRASH_ARMED": "1"}, workdir=armed.workdir)
    launchers.start()
    repo = dp.make_repo([kp.upstream, import_segv.import_segv], tmp_path,
                        default_executor=rs.Executor.kubernetes(worker_image="rivers-worker:armed"))
    result = Background(repo).wait(120)
    [(name, message)] = result.failed_assets
    assert name == "import_segv"
    assert message.startswith("PodFailed: step 'import_segv': its pod rivers-step-"), message
    assert "was killed by SIGSEGV (exit code 139)" in message
    assert result.step_results["import_segv"].attempt == 2  # its policy: one retry, each a new Job
    assert result.step_results["import_segv"].error.reason == "infrastructure"


@pytest.mark.usefixtures("fast_watch", "short_lease")
def test_a_pod_paused_past_its_lease_cannot_write_after_its_retry(launchers: Launchers, fake_cluster: FakeCluster,
                                                                  tmp_path: Path) -> None:
    launchers.start()
    repo = dp.make_repo([kp.paused_once], tmp_path, default_executor=rs.Executor.kubernetes())
    scratch = dp.Scratch(dir=str(tmp_path / "scratch"))
    run = Background(repo)
    wait_for(lambda: scratch.lines("paused_once"), 90, message="the first attempt to start in its pod")
    [first] = fake_cluster.pods("default")
    process = fake_cluster.process("default", first["metadata"]["name"])
    assert process is not None
    process.suspend()  # a frozen node: no heartbeats, no lease renewal
    try:
        result = run.wait(120)  # the lease expires, the step is retried in a new pod and succeeds
    finally:
        (tmp_path / "scratch" / "open").touch()
        (tmp_path / "scratch" / "go").touch()
        process.resume()
    assert result.success and result.step_results["paused_once"].attempt == 2
    wait_for(lambda: fake_cluster.pod("default", first["metadata"]["name"])["status"]["phase"] in
             ("Succeeded", "Failed"), 60, message="the resumed pod to end")
    ended = fake_cluster.pod("default", first["metadata"]["name"])
    assert ended["status"]["phase"] == "Failed"  # its write was fenced off, its report dropped
    assert repo.load_node("paused_once") == 2  # the retry's value stands
    assert len(scratch.lines("paused_once")) == 2


def test_redis_gone_while_a_pod_ends_loses_nothing(fake_cluster: FakeCluster, persistent_redis: Any,
                                                   tmp_path: Path) -> None:
    """Redis stops while a step runs in its pod, the pod ends meanwhile; once Redis is back the run completes.
    The launcher and its pods give up on a Redis command after 2 reconnects rather than ~10 s of them, so the pod
    ends (without reporting) sooner."""
    with launchers_on(fake_cluster, persistent_redis.url, tmp_path) as launchers:
        launchers.start(env={"RIVERS_REDIS_RETRIES": "2"})
        repo = dp.make_repo([dp.source, dp.gated, dp.after_gated], tmp_path,
                            default_executor=rs.Executor.kubernetes())
        scratch = dp.Scratch(dir=str(tmp_path / "scratch"))
        run = Background(repo)
        wait_for(lambda: scratch.lines("gated"), 90, message="the gated step to run in its pod")
        [pod] = [p for p in fake_cluster.pods("default") if p["status"]["phase"] == "Running"]
        persistent_redis.stop()
        (tmp_path / "scratch" / "open").touch()  # the step returns while Redis is away
        wait_for(lambda: fake_cluster.pod("default", pod["metadata"]["name"])["status"]["phase"] in
                 ("Succeeded", "Failed"), 60, message="the pod to end while Redis is down")
        persistent_redis.start()
        result = run.wait(120)
        assert result.success, (result.failed_assets, launchers.logs())
        assert repo.load_node("after_gated") == 22
        assert len(scratch.lines("after_gated")) == 1


def test_a_launcher_stops_within_moments_when_redis_is_gone(fake_cluster: FakeCluster, forgetful_redis: Any,
                                                            tmp_path: Path) -> None:
    import time

    with launchers_on(fake_cluster, forgetful_redis.url, tmp_path) as launchers:
        process = launchers.start()
        forgetful_redis.stop()
        process.send_signal(signal.SIGTERM)
        began = time.monotonic()
        code = process.wait(30)
        assert time.monotonic() - began < 5, launchers.logs()
        assert code == 1 and events(launchers, "launcher.exit"), launchers.logs()


@pytest.mark.usefixtures("fast_watch")
def test_a_step_is_running_once_its_pod_took_it_over(launchers: Launchers, fake_cluster: FakeCluster,
                                                     tmp_path: Path) -> None:
    from rivers.run import listening
    from tests.e2e.test_running_events import Events

    launchers.start()
    repo = dp.make_repo([dp.source, dp.gated], tmp_path, default_executor=rs.Executor.kubernetes())
    events = Events()
    with listening(events):
        with fake_cluster.hold("rivers.io/step=gated"):
            run = Background(repo)
            wait_for(lambda: fake_cluster.pods("default", "rivers.io/step=gated"), 60, message="the gated pod")
            assert events.of("gated") == ["started"]  # its pod is pending: queued, not running
        wait_for(lambda: "running" in events.of("gated"), 30, message="the pod to take the step over")
        (tmp_path / "scratch" / "open").touch()
        result = run.wait(60)
    assert result.success and events.of("gated") == ["started", "running", "succeeded"]
