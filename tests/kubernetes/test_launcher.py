"""The pod launcher end to end: a real Redis, the fake cluster's API server and kubelet, real step pods."""

from __future__ import annotations

from pathlib import Path

import pytest

import rivers as rs
from tests.conftest import Background
from tests.kubernetes.fake_cluster import FakeCluster
from tests.kubernetes.launcher_fixtures import Launchers
from tests.pipelines import distributed_pipeline as dp

pytestmark = pytest.mark.slow


def test_steps_run_as_pods_and_pass_values(launchers: Launchers, fake_cluster: FakeCluster, tmp_path: Path) -> None:
    launchers.start()
    repo = dp.make_repo([dp.source, dp.doubled], tmp_path, default_executor=rs.Executor.kubernetes())
    result = Background(repo).wait(120)
    assert result.success, (result.failed_assets, launchers.logs())
    assert repo.load_node("doubled") == 42
