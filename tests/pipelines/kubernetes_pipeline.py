"""Steps for the pod launcher's end-to-end tests (tests/kubernetes/test_launcher.py): importable by step pods.

Executions are counted in the `scratch` resource's directory (distributed_pipeline.Scratch), so a test can tell
how many times a step's function really ran, in whichever pod.
"""

from __future__ import annotations

import os

import rivers as rs
from tests.pipelines.distributed_graph_pipeline import Pids
from tests.pipelines.distributed_pipeline import Scratch

HUNGRY_MB = 150  # past a 128Mi limit with the interpreter (~60 MB), well within 256Mi


@rs.Asset(compute=rs.Compute(memory="128Mi"),
          retry=rs.RetryPolicy(max_retries=2, escalate=rs.ComputeEscalation(max_memory="1Gi")))
def hungry(scratch: Scratch) -> int:
    """Needs more than its first pod's memory: OOMKilled, then retried in a pod twice as large."""
    scratch.count("hungry")
    print(f"hungry: allocating {HUNGRY_MB} MB", flush=True)
    data = b"x" * (HUNGRY_MB * 2**20)  # written, so really resident
    return len(data) // 2**20


@rs.Asset(retry=rs.RetryPolicy(max_retries=0))
def never_starts() -> int:
    return 1


@rs.Asset(metadata={"rivers/executor": "in_process"})
def here(scratch: Scratch) -> int:
    scratch.count("here")
    return os.getpid()


@rs.Asset(metadata={"rivers/executor": "parallel"})
def on_worker(here: int, scratch: Scratch) -> int:
    scratch.count("on_worker")
    return os.getpid()


@rs.Asset(metadata={"rivers/executor": "kubernetes"})
def in_pod(here: int, on_worker: int, scratch: Scratch) -> list[int]:
    scratch.count("in_pod")
    return [here, on_worker, os.getpid()]


# -- a graph on Kubernetes whose tasks all run in its one pod, and a fan-out whose instances are pods -----------


@rs.Task
def k_first(pids: Pids) -> int:
    pids.record("k_fused/k_first")
    return 1


@rs.Task
def k_second(value: int, pids: Pids) -> int:
    pids.record("k_fused/k_second")
    return value + 1


@rs.Asset.from_graph(metadata={"rivers/executor": "kubernetes", "rivers/node/executor": "in_process"})
def k_fused() -> int:
    return k_second(k_first())


@rs.Asset
def k_items() -> list[int]:
    return list(range(6))


@rs.Task
def k_split(items: list[int]) -> list[rs.DynamicOutput]:
    return [rs.DynamicOutput(str(item), item) for item in items]


@rs.Task
def k_square(item: int, pids: Pids) -> int:
    pids.enter(str(item))
    try:
        pids.record("k_fanned/k_square")
        import time

        time.sleep(0.3)
        return item * item
    finally:
        pids.leave(str(item))


@rs.Task
def k_sum(values: list[int]) -> int:
    return sum(values)


@rs.Asset.from_graph(metadata={"rivers/executor": "kubernetes"})
def k_fanned(k_items: list[int]) -> int:
    return k_sum(k_split(k_items).map(k_square, max_concurrency=3).collect())


@rs.Asset
def upstream() -> int:
    return 1


@rs.Asset
def paused_once(scratch: Scratch) -> int:
    """The first execution waits for 'go' (its pod is paused meanwhile, past its lease); later ones return at once.

    Returns its execution number: the stored value says which attempt's write stood.
    """
    execution = scratch.count("paused_once")
    if execution == 1:
        scratch.wait_for("go", timeout=120)
    return execution
