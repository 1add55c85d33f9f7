"""Graph assets, fan-out and fused graphs through Redis: RIVERS_REDIS_URL set, steps run in a real rivers-worker.

Values are pickled to files (PickleIOHandler), so every step may leave this process; each task records the pid
that ran it, compared with the worker's pool processes (psutil).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from obstore.store import LocalStore

import rivers as rs
from tests.conftest import WorkerProcesses
from tests.pipelines import distributed_graph_pipeline as dg

pytestmark = pytest.mark.slow


def make_repo(assets: list[rs.Asset], tmp_path: Path) -> tuple[rs.CodeRepository, dg.Pids]:
    pids = dg.Pids(directory=str(tmp_path / "pids"))
    (tmp_path / "pids").mkdir(exist_ok=True)
    repo = rs.CodeRepository(
        assets, default_executor=rs.Executor.parallel(2), resources={"pids": pids},
        default_io_handler=rs.PickleIOHandler(LocalStore(str(tmp_path / "values"), mkdir=True)),
    )
    return repo, pids


def pool_of(workers: WorkerProcesses, worker: subprocess.Popen[bytes]) -> set[int]:
    pool = {child.pid for child in workers.tree(worker)}
    assert pool and worker.pid not in pool and os.getpid() not in pool
    return pool


def test_a_graph_asset_runs_its_tasks_in_worker_processes(
    redis_url: str, workers: WorkerProcesses, tmp_path: Path
) -> None:
    [worker] = workers.start(redis_url, concurrency=2)
    repo, pids = make_repo([dg.base, dg.pipeline, dg.report], tmp_path)
    result = repo.materialize()
    assert result.success, result.failed_assets
    assert result.materialized_assets == [
        "base", "pipeline/fetch", "pipeline/clean", "pipeline/total", "pipeline/add_base", "pipeline", "report",
    ]
    assert repo.load_node("pipeline/fetch") == [1, 2, 3, 4]
    assert repo.load_node("pipeline/clean") == [2, 3, 4]
    assert repo.load_node("pipeline") == 109
    assert repo.load_node("report") == "total=109"
    recorded = pids.read()
    assert sorted(recorded) == ["add_base", "base", "clean", "fetch", "report", "total"]
    pool = pool_of(workers, worker)
    assert set().union(*recorded.values()) <= pool
    for key in ("pipeline/fetch", "pipeline/clean", "pipeline/total", "pipeline/add_base", "report"):
        assert result.step_results[key].pid in pool, key


def test_a_fan_out_with_dynamic_keys_runs_throttled_in_worker_processes(
    redis_url: str, workers: WorkerProcesses, tmp_path: Path
) -> None:
    [worker] = workers.start(redis_url, concurrency=2)
    repo, pids = make_repo([dg.documents, dg.word_counts], tmp_path)
    result = repo.materialize()
    assert result.success, result.failed_assets
    keys = sorted(dg.DOCUMENTS)
    instances = [f"word_counts/count_words__{key}" for key in keys]
    names = result.materialized_assets
    assert names[:3] == ["documents", "word_counts/split", "word_counts/count_words"]
    assert sorted(n for n in names if n.startswith("word_counts/count_words__") and not n.endswith("__collect")) \
        == instances
    assert names[-3:] == ["word_counts/count_words__collect", "word_counts/merge", "word_counts"]
    assert repo.load_node("word_counts/count_words__river") == {"a": 1, "river": 1, "flows": 1, "to": 1, "the": 1,
                                                                "sea": 1}
    expected: dict[str, int] = {}
    for text in dg.DOCUMENTS.values():
        for word in text.split():
            expected[word] = expected.get(word, 0) + 1
    assert repo.load_node("word_counts") == expected
    assert pids.peak() == 1  # max_concurrency=1, although the worker has two free slots
    recorded = pids.read()
    assert sorted(recorded) == sorted(["split", "merge", *(f"count_words:{k}" for k in keys)])
    pool = pool_of(workers, worker)
    assert set().union(*recorded.values()) <= pool
    for key in ("word_counts/split", *instances, "word_counts/merge"):
        assert result.step_results[key].pid in pool, key


def test_a_fused_graph_runs_all_its_tasks_in_one_worker_process(
    redis_url: str, workers: WorkerProcesses, tmp_path: Path
) -> None:
    [worker] = workers.start(redis_url, concurrency=2)
    repo, pids = make_repo([dg.fused], tmp_path)
    result = repo.materialize()
    assert result.success, result.failed_assets
    assert result.materialized_assets == ["fused/first", "fused/second", "fused/third", "fused"]
    assert list(result.step_results) == ["fused"]  # one step: its tasks never came back here in between
    second, ran_in = repo.load_node("fused")
    assert second == 2 and repo.load_node("fused/second") == 2
    recorded = pids.read()
    assert sorted(recorded) == ["fused/first", "fused/second", "fused/third"]
    assert set().union(*recorded.values()) == {ran_in} == {result.step_results["fused"].pid}
    assert ran_in in pool_of(workers, worker)
