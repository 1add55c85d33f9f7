"""The launcher's view of its cluster: API clients loaded the usual way, its own namespace and image."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rivers.exceptions import ConfigurationError

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
WORKER_IMAGE_ENV = "RIVERS_WORKER_IMAGE"
NO_IMAGE = ("Kubernetes executor requires a worker image: pass worker_image to Executor.kubernetes() "
            f"or set {WORKER_IMAGE_ENV}")


@dataclass
class Cluster:
    api_client: Any  # kubernetes.client.ApiClient
    core: Any  # CoreV1Api
    batch: Any  # BatchV1Api
    namespace: str  # the launcher's own: where steps go unless their executor names another
    in_cluster: bool

    def close(self) -> None:
        self.api_client.close()


def connect_cluster(kubeconfig: str | None = None, namespace: str | None = None) -> Cluster:
    """In-cluster service account when running in a pod (and no kubeconfig is given), else the kubeconfig's
    current context (`kubeconfig` / KUBECONFIG / ~/.kube/config)."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    in_cluster = kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ
    try:
        if in_cluster:
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            api_client = client.ApiClient(configuration)
        else:
            api_client = config.new_client_from_config(config_file=kubeconfig, persist_config=False)
    except (ConfigException, OSError) as exc:
        where = "the in-cluster service account" if in_cluster else (kubeconfig or os.environ.get(
            "KUBECONFIG", "~/.kube/config"))
        raise ConfigurationError(f"cannot load the Kubernetes configuration from {where}: {exc}") from None
    own = namespace or _own_namespace(kubeconfig, in_cluster)
    return Cluster(api_client, client.CoreV1Api(api_client), client.BatchV1Api(api_client), own, in_cluster)


def _own_namespace(kubeconfig: str | None, in_cluster: bool) -> str:
    if in_cluster:
        path = SERVICE_ACCOUNT_DIR / "namespace"
        if path.exists():
            return path.read_text().strip() or "default"
        return "default"
    from kubernetes import config

    try:
        _, active = config.list_kube_config_contexts(config_file=kubeconfig)
    except Exception:  # noqa: BLE001 - no contexts: the default namespace
        return "default"
    return str((active or {}).get("context", {}).get("namespace") or "default")


def default_image(cluster: Cluster) -> str | None:
    """RIVERS_WORKER_IMAGE, else the image of the launcher's own pod (in a cluster), else None."""
    if os.environ.get(WORKER_IMAGE_ENV):
        return os.environ[WORKER_IMAGE_ENV]
    if not cluster.in_cluster:
        return None
    try:
        pod = cluster.core.read_namespaced_pod(os.environ.get("HOSTNAME", ""), cluster.namespace)
    except Exception:  # noqa: BLE001 - not readable: steps must name their image
        return None
    return str(pod.spec.containers[0].image)
