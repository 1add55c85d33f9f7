"""The pure pieces of the pod launcher (API.md §7, §11): quantities, a step's pod request, its Job manifest,
ComputeEscalation / FailureReason, and the reasons the run state records. No processes, no cluster."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import pytest

import rivers as rs
from rivers import defaults
from rivers.coordinator.state import RunState
from rivers.exceptions import ConfigurationError, WorkerLost
from rivers.kubernetes.manifests import (
    STEP_PODS,
    StepAttempt,
    job_manifest,
    job_name,
    label_value,
    labels,
)
from rivers.kubernetes.pod_request import PodRequest, pod_request
from rivers.kubernetes.quantity import format_cpu, format_memory, parse_cpu, parse_memory
from rivers.plan import build_plan
from rivers.results import OutputResult, StepResult

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
OOM = rs.FailureReason.OUT_OF_MEMORY.value
ERROR = rs.FailureReason.ERROR.value
KUBE = rs.Executor.kubernetes()


# -- quantities --------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "size"), [
    ("512Mi", 512 * 2**20), ("2Gi", 2 * 2**30), ("1.5Gi", 3 * 2**29), ("1Ki", 1024), ("1Ti", 2**40),
    ("1k", 1000), ("1M", 10**6), ("1.5G", 1_500_000_000), ("2E", 2 * 10**18), ("1Ei", 2**60),
    ("128974848", 128974848), ("1e3", 1000), ("1E3", 1000), (".5Ki", 512), ("  64Mi ", 64 * 2**20),
    ("4.03G", 4_030_000_000), ("500m", 1),  # a fraction of a byte rounds up
])
def test_parse_memory(text: str, size: int) -> None:
    assert parse_memory(text) == size


@pytest.mark.parametrize(("text", "millicores"), [
    ("500m", 500), ("1", 1000), ("2", 2000), ("0.5", 500), (".25", 250), ("1.5", 1500), ("100m", 100),
    ("4.03", 4030), ("16.01", 16010), ("0.0001", 1), ("1k", 1_000_000), ("2e0", 2000),
])
def test_parse_cpu(text: str, millicores: int) -> None:
    assert parse_cpu(text) == millicores


@pytest.mark.parametrize("text", ["lots", "", "-1", "1.5 Gi", "1gi", "1ki", "1K", "Mi", "1MiB", "1e", "0x10", "1,5"])
def test_a_bad_quantity_is_a_configuration_error_naming_the_text(text: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(repr(text))) as memory:
        parse_memory(text)
    assert "memory" in str(memory.value) and "not a Kubernetes quantity" in str(memory.value)
    with pytest.raises(ConfigurationError, match=re.escape(repr(text))) as cpu:
        parse_cpu(text)
    assert "cpu" in str(cpu.value)


@pytest.mark.parametrize(("size", "text"), [
    (2**30, "1Gi"), (768 * 2**20, "768Mi"), (3 * 2**29, "1536Mi"), (1024, "1Ki"), (2**40, "1Ti"),
    (4 * 2**40, "4Ti"), (1000, "1000"), (0, "0"), (1536, "1536"),
    (2**20 + 1, "2Mi"),  # not exact: whole Mi, rounded up, never less than asked
])
def test_format_memory(size: int, text: str) -> None:
    assert format_memory(size) == text
    assert parse_memory(format_memory(size)) >= size


@pytest.mark.parametrize(("millicores", "text"), [(500, "500m"), (1000, "1"), (2000, "2"), (1500, "1500m"), (1, "1m")])
def test_format_cpu(millicores: int, text: str) -> None:
    assert format_cpu(millicores) == text
    assert parse_cpu(format_cpu(millicores)) == millicores


@pytest.mark.parametrize("text", ["512Mi", "1Gi", "3Gi", "768Mi", "8Ti"])
def test_binary_memory_round_trips(text: str) -> None:
    assert format_memory(parse_memory(text)) == text


# -- the pod request: executor, Compute, escalation ---------------------------------------------------
def test_executor_defaults() -> None:
    assert pod_request(KUBE, None, None, []) == PodRequest(
        image=None, namespace=None, service_account="rivers-executor", cpu="500m", memory="512Mi", gpu=None)
    executor = rs.Executor.kubernetes("img:1", namespace="ns", service_account="sa", worker_cpu="2",
                                      worker_memory="1Gi")
    assert pod_request(executor, None, None, []) == PodRequest(
        image="img:1", namespace="ns", service_account="sa", cpu="2", memory="1Gi", gpu=None)


def test_compute_overrides_per_axis() -> None:
    cpu_only = pod_request(KUBE, rs.Compute(cpu="4"), None, [])
    assert (cpu_only.cpu, cpu_only.memory, cpu_only.gpu) == ("4", "512Mi", None)
    memory_only = pod_request(KUBE, rs.Compute(memory="8Gi"), None, [])
    assert (memory_only.cpu, memory_only.memory, memory_only.gpu) == ("500m", "8Gi", None)
    gpu = pod_request(KUBE, rs.Compute(gpu=2), None, [])
    assert (gpu.cpu, gpu.memory, gpu.gpu) == ("500m", "512Mi", 2)
    every = pod_request(KUBE, rs.Compute(cpu="250m", memory="2Gi", gpu=1), None, [])
    assert (every.cpu, every.memory, every.gpu) == ("250m", "2Gi", 1)
    assert pod_request(KUBE, rs.Compute(), None, []) == pod_request(KUBE, None, None, [])


def test_compute_numbers_are_quantities() -> None:
    request = pod_request(KUBE, rs.Compute(cpu=2, memory=2**30), None, [])  # type: ignore[arg-type]
    assert (request.cpu, request.memory) == ("2", str(2**30))


def test_no_escalation_without_a_policy_or_without_earlier_failures() -> None:
    assert pod_request(KUBE, None, None, [OOM, OOM]).memory == "512Mi"
    assert pod_request(KUBE, None, rs.ComputeEscalation(max_memory="4Gi"), []).memory == "512Mi"


def test_memory_doubles_per_out_of_memory_attempt_up_to_the_ceiling() -> None:
    escalation = rs.ComputeEscalation(max_memory="4Gi")
    grown = [pod_request(KUBE, None, escalation, [OOM] * n).memory for n in range(6)]
    assert grown == ["512Mi", "1Gi", "2Gi", "4Gi", "4Gi", "4Gi"]
    cpu = {pod_request(KUBE, None, escalation, [OOM] * n).cpu for n in range(6)}
    assert cpu == {"500m"}  # cpu grows only with cpu_factor


def test_escalation_starts_from_compute_and_uses_the_factor() -> None:
    escalation = rs.ComputeEscalation(max_memory="10Gi", factor=1.5)
    request = pod_request(KUBE, rs.Compute(memory="1Gi"), escalation, [OOM, OOM])
    assert request.memory == "2304Mi"  # 1Gi * 1.5 * 1.5


def test_only_reasons_in_on_escalate() -> None:
    default = rs.ComputeEscalation(max_memory="4Gi")
    assert default.on == (rs.FailureReason.OUT_OF_MEMORY,)
    assert pod_request(KUBE, None, default, [ERROR]).memory == "512Mi"  # an error attempt does not grow it
    assert pod_request(KUBE, None, default, ["infrastructure", "timeout"]).memory == "512Mi"
    assert pod_request(KUBE, None, default, [ERROR, OOM, ERROR]).memory == "1Gi"
    assert pod_request(KUBE, None, default, [rs.FailureReason.OUT_OF_MEMORY]).memory == "1Gi"
    timeouts = rs.ComputeEscalation(max_memory="4Gi", on=[rs.FailureReason.TIMEOUT, rs.FailureReason.OUT_OF_MEMORY])
    assert pod_request(KUBE, None, timeouts, ["timeout", OOM, ERROR]).memory == "2Gi"


def test_the_ceiling_is_never_passed_even_when_it_is_not_a_whole_mi() -> None:
    escalation = rs.ComputeEscalation(max_memory="1000001k")  # 1_000_001_000 bytes: not a multiple of 1Mi
    executor = rs.Executor.kubernetes(worker_memory="300M")
    for attempts in range(1, 5):
        memory = pod_request(executor, None, escalation, [OOM] * attempts).memory
        assert parse_memory(memory) <= 1_000_001_000
    assert pod_request(executor, None, escalation, [OOM] * 2).memory == "1000001k"  # capped: the ceiling as written
    assert pod_request(rs.Executor.kubernetes(worker_memory="3G"), None,
                       rs.ComputeEscalation(max_memory="4G"), [OOM]).memory == "4G"


def test_a_start_above_the_ceiling_is_never_shrunk() -> None:
    escalation = rs.ComputeEscalation(max_memory="1Gi", cpu_factor=2, max_cpu="1")
    request = pod_request(KUBE, rs.Compute(cpu="4", memory="8Gi"), escalation, [OOM, OOM])
    assert (request.cpu, request.memory) == ("4", "8Gi")
    at_ceiling = pod_request(KUBE, rs.Compute(memory="1Gi"), escalation, [OOM])
    assert at_ceiling.memory == "1Gi"


def test_cpu_grows_with_cpu_factor_capped_by_max_cpu() -> None:
    escalation = rs.ComputeEscalation(max_memory="64Gi", cpu_factor=2, max_cpu="1500m")
    cpus = [pod_request(KUBE, None, escalation, [OOM] * n).cpu for n in range(4)]
    assert cpus == ["500m", "1", "1500m", "1500m"]
    unbounded = rs.ComputeEscalation(max_memory="64Gi", cpu_factor=3)
    assert pod_request(KUBE, None, unbounded, [OOM, OOM]).cpu == "4500m"
    assert pod_request(KUBE, None, unbounded, [ERROR]).cpu == "500m"


def test_escalation_keeps_image_namespace_account_and_gpu() -> None:
    executor = rs.Executor.kubernetes("img:2", namespace="jobs", service_account="runner")
    request = pod_request(executor, rs.Compute(gpu=1), rs.ComputeEscalation(max_memory="4Gi"), [OOM])
    assert (request.image, request.namespace, request.service_account, request.gpu, request.memory) == (
        "img:2", "jobs", "runner", 1, "1Gi")


# -- Job names and labels --------------------------------------------------------------------------
RUN_ID = "0f3a9c1e4b7d4e2a9c1e4b7d4e2a9c1e"


def test_job_name_format() -> None:
    step_hash = hashlib.sha256(b"my_asset").hexdigest()[:8]
    assert job_name(RUN_ID, "my_asset", 1) == f"rivers-step-0f3a9c1e-{step_hash}"
    assert job_name(RUN_ID, "my_asset", 2) == f"rivers-step-0f3a9c1e-{step_hash}-r2"
    assert job_name(RUN_ID, "my_asset", 17) == f"rivers-step-0f3a9c1e-{step_hash}-r17"
    assert job_name(RUN_ID.upper(), "my_asset", 1) == job_name(RUN_ID, "my_asset", 1)
    assert job_name("0f3a9c1e-4b7d-4e2a", "my_asset", 1) == f"rivers-step-0f3a9c1e-{step_hash}"


def test_job_names_are_stable_and_distinct() -> None:
    assert job_name(RUN_ID, "a", 1) == job_name(RUN_ID, "a", 1)  # the same attempt: the same Job (adoption)
    names = {job_name(RUN_ID, key, attempt) for key in ("a", "b", "graph/a", "A") for attempt in (1, 2, 3)}
    assert len(names) == 12
    assert job_name(RUN_ID, "a", 1) != job_name("1" * 32, "a", 1)


@pytest.mark.parametrize("key", ["a", "my_asset", "Graph/Task.with spaces", "x" * 500, "ünïcode/ключ",
                                 "fanned/double[3]", "__", "--a--"])
@pytest.mark.parametrize("attempt", [1, 2, 10, 12345])
def test_job_names_are_dns_labels(key: str, attempt: int) -> None:
    name = job_name(RUN_ID, key, attempt)
    assert len(name) <= 63 and DNS_LABEL.match(name), name


@pytest.mark.parametrize(("text", "value"), [
    ("a/b c", "a-b-c"), ("My_Asset", "my_asset"), ("graph/Task.v2", "graph-task.v2"), ("-_a_-", "a"),
    ("/leading", "leading"), ("trailing/", "trailing"), ("a.b-c_d", "a.b-c_d"), ("ключ/a", "a"), ("", ""),
])
def test_label_value_sanitising(text: str, value: str) -> None:
    assert label_value(text) == value


@pytest.mark.parametrize("text", ["x" * 100, "a/" * 60, "A" * 62 + "/b", "k" * 62 + "/" + "z" * 10, "ü" * 80,
                                  "graph/" + "very_long_task_name_" * 5])
def test_long_label_values_stay_valid(text: str) -> None:
    value = label_value(text)
    assert len(value) <= 63 and LABEL_VALUE.match(value), value
    assert value == value.lower()


def test_labels() -> None:
    step = StepAttempt(job_id="job-1", run_id=RUN_ID, step_key="Graph/Task A", attempt=3)
    assert labels(step) == {"rivers.io/run-id": RUN_ID, "rivers.io/step": "graph-task-a",
                            "rivers.io/attempt": "3", "rivers.io/component": "step-worker"}
    assert STEP_PODS == "rivers.io/component=step-worker"


# -- the Job manifest ------------------------------------------------------------------------------
STEP = StepAttempt(job_id="rivers:job:abc123", run_id=RUN_ID, step_key="graph/Task one", attempt=2)


def manifest(pod: PodRequest | None = None, **kwargs: Any) -> dict[str, Any]:
    return job_manifest(STEP, pod or PodRequest(), "registry.example/rivers:1.0", **kwargs)


def container_of(job: dict[str, Any]) -> dict[str, Any]:
    containers = job["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container_of(job)["env"]}


def test_manifest_metadata() -> None:
    job = manifest()
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    assert job["metadata"]["name"] == job_name(RUN_ID, "graph/Task one", 2)
    assert job["metadata"]["name"].endswith("-r2")
    expected = {"rivers.io/run-id": RUN_ID, "rivers.io/step": "graph-task-one", "rivers.io/attempt": "2",
                "rivers.io/component": "step-worker"}
    assert job["metadata"]["labels"] == expected
    assert job["spec"]["template"]["metadata"]["labels"] == expected  # the pods carry them too
    annotations = {"rivers.io/job-id": "rivers:job:abc123", "rivers.io/step-key": "graph/Task one"}
    assert job["metadata"]["annotations"] == annotations
    assert job["spec"]["template"]["metadata"]["annotations"] == annotations


def test_manifest_job_and_pod_spec() -> None:
    job = manifest(PodRequest(service_account="my-account"))
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["ttlSecondsAfterFinished"] == defaults.STEP_JOB_TTL_S == 3600
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == "my-account"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = container_of(job)
    assert container["name"] == "step"
    assert container["image"] == "registry.example/rivers:1.0"
    assert container["command"] == ["rivers-worker", "--executor", "kubernetes", "--step", "rivers:job:abc123"]
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_manifest_resources_requests_equal_limits() -> None:
    resources = container_of(manifest(PodRequest(cpu="2", memory="3Gi")))["resources"]
    assert resources == {"requests": {"cpu": "2", "memory": "3Gi"}, "limits": {"cpu": "2", "memory": "3Gi"}}


def test_manifest_gpu_is_a_limit() -> None:
    resources = container_of(manifest(PodRequest(gpu=2)))["resources"]
    assert resources["limits"] == {"cpu": "500m", "memory": "512Mi", "nvidia.com/gpu": "2"}
    assert "nvidia.com/gpu" not in resources["requests"]


def test_manifest_env_comes_from_secrets() -> None:
    env = env_of(manifest())
    assert env["RIVERS_REDIS_URL"] == {
        "name": "RIVERS_REDIS_URL", "valueFrom": {"secretKeyRef": {"name": "rivers-redis", "key": "url"}}}
    assert env["RIVERS_SECRET"] == {
        "name": "RIVERS_SECRET",
        "valueFrom": {"secretKeyRef": {"name": "rivers-secret", "key": "secret", "optional": True}}}
    assert env["RIVERS_RUN_ID"]["value"] == RUN_ID
    assert env["RIVERS_STEP_ATTEMPT"]["value"] == "2"
    other = env_of(manifest(redis_secret="my-redis"))
    assert other["RIVERS_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "my-redis", "key": "url"}


def test_manifest_extra_env_is_passed_on() -> None:
    env = env_of(manifest(extra_env={"RIVERS_LOG_FORMAT": "json", "RIVERS_LOG_LEVEL": "DEBUG"}))
    assert env["RIVERS_LOG_FORMAT"]["value"] == "json" and env["RIVERS_LOG_LEVEL"]["value"] == "DEBUG"


def test_manifest_holds_no_literal_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIVERS_REDIS_URL", "redis://:hunter2-password@redis.example:6379/0")
    monkeypatch.setenv("RIVERS_SECRET", "s3cr3t-signing-key")
    text = json.dumps(manifest())
    assert "hunter2" not in text and "redis://" not in text and "s3cr3t" not in text
    for entry in container_of(manifest())["env"]:
        if entry["name"] in ("RIVERS_REDIS_URL", "RIVERS_SECRET"):
            assert "value" not in entry and "secretKeyRef" in entry["valueFrom"]


def test_manifest_is_json_and_independent_per_call() -> None:
    first, second = manifest(), manifest()
    assert json.loads(json.dumps(first)) == first == second
    first["metadata"]["labels"]["x"] = "y"
    assert "x" not in manifest()["metadata"]["labels"]


# -- ComputeEscalation, FailureReason, RetryPolicy(escalate=), executor validation -------------------------
def test_compute_escalation_repr() -> None:
    assert repr(rs.ComputeEscalation(factor=2, max_memory="4Gi")) == "ComputeEscalation(factor=2, max_memory='4Gi')"
    assert repr(rs.ComputeEscalation(max_memory="4Gi")) == "ComputeEscalation(factor=2, max_memory='4Gi')"
    assert repr(rs.ComputeEscalation(max_memory="8Gi", factor=1.5, cpu_factor=2, max_cpu="4")) == (
        "ComputeEscalation(factor=1.5, max_memory='8Gi', cpu_factor=2, max_cpu='4')")


def test_compute_escalation_attributes() -> None:
    escalation = rs.ComputeEscalation(max_memory="4Gi", on=[rs.FailureReason.TIMEOUT])
    assert (escalation.max_memory, escalation.factor, escalation.cpu_factor, escalation.max_cpu) == (
        "4Gi", 2.0, None, None)
    assert escalation.on == (rs.FailureReason.TIMEOUT,)


def test_failure_reason() -> None:
    assert [reason.value for reason in rs.FailureReason] == [
        "error", "out_of_memory", "timeout", "infrastructure", "cancelled"]
    assert repr(rs.FailureReason.OUT_OF_MEMORY) == "FailureReason.OUT_OF_MEMORY"
    assert rs.FailureReason("out_of_memory") is rs.FailureReason.OUT_OF_MEMORY


@pytest.mark.parametrize("kwargs", [{"max_memory": "lots"}, {"max_memory": "4Gi", "max_cpu": "many"}])
def test_compute_escalation_bad_quantity(kwargs: dict[str, Any]) -> None:
    bad = kwargs.get("max_cpu", kwargs["max_memory"])
    with pytest.raises(ConfigurationError, match=repr(bad)):
        rs.ComputeEscalation(**kwargs)


@pytest.mark.parametrize("kwargs", [{"factor": 0.5}, {"factor": 0}, {"cpu_factor": 0.9}])
def test_compute_escalation_factor_below_one(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="at least 1"):
        rs.ComputeEscalation(max_memory="4Gi", **kwargs)


def test_compute_escalation_on_takes_failure_reasons() -> None:
    with pytest.raises(TypeError, match="FailureReason"):
        rs.ComputeEscalation(max_memory="4Gi", on=["x"])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        rs.ComputeEscalation(max_memory="4Gi", on=["out_of_memory"])  # type: ignore[list-item]


def test_compute_escalation_is_keyword_only_and_needs_max_memory() -> None:
    with pytest.raises(TypeError):
        rs.ComputeEscalation("4Gi")  # type: ignore[misc]
    with pytest.raises(TypeError):
        rs.ComputeEscalation()  # type: ignore[call-arg]


def test_retry_policy_escalate() -> None:
    escalation = rs.ComputeEscalation(max_memory="4Gi")
    assert rs.RetryPolicy(2, escalate=escalation).escalate is escalation
    assert rs.RetryPolicy().escalate is None
    with pytest.raises(TypeError, match="ComputeEscalation"):
        rs.RetryPolicy(escalate="4Gi")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        rs.RetryPolicy(escalate=rs.Compute(memory="4Gi"))  # type: ignore[arg-type]


def test_kubernetes_executor_validation() -> None:
    with pytest.raises(ConfigurationError, match="'lots'"):
        rs.Executor.kubernetes(worker_memory="lots")
    with pytest.raises(ConfigurationError, match="'fast'"):
        rs.Executor.kubernetes(worker_cpu="fast")
    with pytest.raises(ConfigurationError, match="max_concurrent_steps"):
        rs.Executor.kubernetes(max_concurrent_steps=0)
    assert rs.Executor.kubernetes(max_concurrent_steps=1).max_concurrent_steps == 1


# -- the run state records why each attempt failed ---------------------------------------------------
@rs.Asset(retry=rs.RetryPolicy(max_retries=3, escalate=rs.ComputeEscalation(max_memory="2Gi")))
def hungry() -> int:
    return 1


def test_run_state_records_each_failed_attempts_reason_for_the_next_pod() -> None:
    repo = rs.CodeRepository([hungry], default_executor=rs.Executor.in_process())
    graph = repo._resolve()
    state = RunState(build_plan(graph, set(graph.producer), rs.Executor.in_process(), True))
    step = state.begin()[0]
    escalation = step.retry.escalate if step.retry is not None else None
    assert escalation is not None

    def fail(attempt: int, reason: str) -> StepResult:
        exc = WorkerLost("pod OOMKilled") if reason == OOM else ValueError("boom")
        return StepResult.failed("run-1", step.key, attempt, step.outputs, exc,
                                 infrastructure=reason != ERROR, reason=reason)

    assert state.admit(step) == 1 and state.reasons.get(step.key) is None
    attempt = 1
    assert pod_request(KUBE, None, escalation, state.reasons.get(step.key, ())).memory == "512Mi"
    assert state.settle(fail(attempt, OOM), 0.0).retry_in is not None
    assert state.reasons[step.key] == [OOM]
    assert pod_request(KUBE, None, escalation, state.reasons[step.key]).memory == "1Gi"

    assert state.admit(step) == 2
    attempt = 2
    state.settle(fail(attempt, ERROR), 0.0)
    assert state.reasons[step.key] == [OOM, ERROR]
    assert pod_request(KUBE, None, escalation, state.reasons[step.key]).memory == "1Gi"  # an error: no growth

    assert state.admit(step) == 3
    attempt = 3
    state.settle(fail(attempt, OOM), 0.0)
    assert state.reasons[step.key] == [OOM, ERROR, OOM]
    assert pod_request(KUBE, None, escalation, state.reasons[step.key]).memory == "2Gi"

    assert state.admit(step) == 4
    attempt = 4
    outputs = [OutputResult(name=name, status="succeeded") for name in step.outputs]
    state.settle(StepResult(run_id="run-1", step_key=step.key, attempt=attempt, status="succeeded",
                            outputs=outputs), 0.0)
    assert state.reasons[step.key] == [OOM, ERROR, OOM]  # a success adds nothing
