"""Fixtures for the Kubernetes tests: one fake cluster per session (see fake_cluster.py), reset for every test.

- `fake_cluster`: the session's FakeCluster, empty, with the images below, KUBECONFIG pointing at it (so a
  launcher subprocess finds it the usual way); at teardown every pod process is killed and the test fails if
  one outlived it or a kubelet / controller thread failed.
- `kube`: the official client built from that kubeconfig: `kube.core` (CoreV1Api), `kube.batch` (BatchV1Api).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client, config

from tests.kubernetes.fake_cluster import FakeCluster, Image
from tests.kubernetes.launcher_fixtures import Launchers, launchers_on

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = str(Path(sys.executable).parent)
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"

PYTHON_IMAGE = "python:3.11-slim"  # a plain Python: the test interpreter first on PATH
WORKER_IMAGE = "rivers-worker:test"  # "contains the project": the venv (rivers-worker) on PATH, the repo importable
IMAGES = {
    PYTHON_IMAGE: Image(env={"PATH": f"{VENV_BIN}:{SYSTEM_PATH}"}),
    WORKER_IMAGE: Image(env={"PATH": f"{VENV_BIN}:{SYSTEM_PATH}", "PYTHONPATH": str(ROOT)}, workdir=str(ROOT)),
}


@dataclass
class Kube:
    api_client: client.ApiClient
    core: client.CoreV1Api
    batch: client.BatchV1Api


@pytest.fixture(scope="session")
def fake_cluster_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeCluster]:
    with FakeCluster(images=IMAGES) as cluster:
        cluster.write_kubeconfig(tmp_path_factory.mktemp("kube") / "config")
        yield cluster
    leaked = cluster.leaked_processes()
    assert not leaked, f"pod processes outlived the fake cluster: {leaked}"


@pytest.fixture
def fake_cluster(fake_cluster_session: FakeCluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCluster]:
    cluster = fake_cluster_session
    cluster.reset()
    assert cluster.kubeconfig is not None
    monkeypatch.setenv("KUBECONFIG", os.fspath(cluster.kubeconfig))
    yield cluster
    leaked = cluster.reset()
    errors = cluster.kubelet.errors + cluster.controller.errors
    cluster.kubelet.errors.clear()
    cluster.controller.errors.clear()
    assert not leaked, f"pod processes outlived the test: {leaked}"
    assert not errors, f"the fake cluster's threads failed: {errors!r}"


@pytest.fixture
def kube(fake_cluster: FakeCluster) -> Iterator[Kube]:
    api_client = config.new_client_from_config(config_file=os.fspath(fake_cluster.kubeconfig))
    yield Kube(api_client, client.CoreV1Api(api_client), client.BatchV1Api(api_client))
    api_client.close()


@pytest.fixture
def launchers(fake_cluster: FakeCluster, redis_url: str, tmp_path: Path) -> Iterator[Launchers]:
    with launchers_on(fake_cluster, redis_url, tmp_path) as started:
        yield started
