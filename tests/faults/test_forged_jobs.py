"""Forged jobs and reports, written straight into Redis by an attacker who can reach it but lacks RIVERS_SECRET.

Real redis-server, real rivers-worker processes, no mocks. What a forged job would do if it ran is made
visible by marker files (tests/pipelines/forgery_targets.py writes them to $FORGERY_MARKERS): the control
tests prove each marker does appear when the same payload arrives signed, so an empty marker directory
after a forged job means the worker did nothing with it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from rivers.distributed.jobs import decode_report, job_fields, job_payload
from rivers.exceptions import ExecutionError
from rivers.queues.redis import _hubs
from rivers.resolve import Resolver
from rivers.results import StepError, StepResult
from rivers.runtime import StepCall
from rivers.spec import PROTOCOL, spec_from_call
from rivers.version import RIVERS_VERSION
from tests.conftest import WorkerProcesses
from tests.pipelines import distributed_pipeline as dp
from tests.redis_server import wait_for

pytestmark = pytest.mark.slow

TARGETS = "tests.pipelines.forgery_targets"  # named by string only: this process never imports it
SECRET = "ours"
QUEUE = "rivers:parallel"
QUEUE_KEY = "rq:queue:rivers:parallel"
REFUSALS = {"unsigned": "is not signed", "mis-signed": "signature that does not verify",
            "transplanted": "signature that does not verify"}


# -- building forged jobs, as an attacker with Redis access would ------------------------------------------


def planted_pickle(event: str) -> bytes:
    """Pickle bytes whose loading calls forgery_targets.write_marker(event) (GLOBAL, MARK, UNICODE, TUPLE, REDUCE)."""
    return f"c{TARGETS}\nwrite_marker\n(V{event}\ntR.".encode()


def real_spec(tmp_path: Path, store: Path) -> dict[str, Any]:
    """The spec the coordinator would send for dp.doubled (input `source` through a PickleIOHandler on `store`)."""
    store.mkdir(exist_ok=True)
    resources = {"scratch": dp.Scratch(dir=str(tmp_path))}
    node = Resolver([dp.source, dp.doubled], resources, dp.handler_for(store), True, {}).resolve().nodes["doubled"]
    call = StepCall(run_id=f"forged-{uuid.uuid4().hex[:8]}", step_key="doubled", attempt=1,
                    definition=node.definition, params=node.params, outputs=list(node.outputs.values()),
                    resources=resources, context_type=node.context_type, config_type=node.config_type,
                    return_hint=node.return_hint)
    spec: dict[str, Any] = json.loads(spec_from_call(call, "parallel").model_dump_json())
    assert spec["protocol"] == PROTOCOL and spec["rivers_version"] == RIVERS_VERSION
    return spec


def forge_import(tmp_path: Path, code_key: bytes) -> dict[str, Any]:
    """The definition names a module whose import writes a marker."""
    spec = real_spec(tmp_path, tmp_path / "store")
    spec["definition"] = {"module": TARGETS, "qualname": "forged_asset", "node": None}
    return spec


def forge_handler_store(tmp_path: Path, code_key: bytes) -> dict[str, Any]:
    """The IO handler reads the step's input from a directory the attacker filled with a planted pickle."""
    attacker = tmp_path / "attacker-store"
    attacker.mkdir(exist_ok=True)
    (attacker / "source.pkl").write_bytes(planted_pickle("store"))
    return real_spec(tmp_path, attacker)


def forge_resource(tmp_path: Path, code_key: bytes) -> dict[str, Any]:
    """The resource is a pydantic model whose setup() writes a marker."""
    spec = real_spec(tmp_path, tmp_path / "store")
    spec["resources"]["scratch"] = {"ref": {"module": TARGETS, "qualname": "MarkerResource", "node": None},
                                    "config_json": "{}"}
    return spec


def forge_pickled_code(tmp_path: Path, code_key: bytes) -> dict[str, Any]:
    """The definition is a Pickled payload whose loading writes a marker, signed under `code_key`."""
    spec = real_spec(tmp_path, tmp_path / "store")
    data = planted_pickle("code")
    spec["definition"] = {"data": base64.b64encode(data).decode(),
                          "signature": hmac.new(code_key, data, hashlib.sha256).hexdigest()}
    return spec


# vector -> (forger, the marker it leaves when it is run)
VECTORS: dict[str, tuple[Callable[[Path, bytes], dict[str, Any]], str]] = {
    "import": (forge_import, "import"),
    "handler-store": (forge_handler_store, "store"),
    "resource-setup": (forge_resource, "setup"),
    "pickled-code": (forge_pickled_code, "code"),
}


def push_job(client: redis.Redis, spec: dict[str, Any] | str, signing: str,
             reply_to: str | None = None) -> tuple[str, str]:
    """HSET rq:job:<id> with the wire fields and RPUSH the id: (job id, the list its report would go to).

    signing: "signed" (our secret), "unsigned", "mis-signed" (another key), or "transplanted": the data and
    signature of a job signed with our secret under another id, copied to a fresh id.
    """
    job_id = uuid.uuid4().hex
    reply_to = reply_to or f"rivers:run:forged-{job_id[:8]}:results"
    spec_json = spec if isinstance(spec, str) else json.dumps(spec)
    signed_as = uuid.uuid4().hex if signing == "transplanted" else job_id
    key = {"signed": SECRET.encode(), "unsigned": None, "mis-signed": b"wrong", "transplanted": SECRET.encode()}
    client.hset(f"rq:job:{job_id}",
                mapping=job_fields(signed_as, spec_json, reply_to, QUEUE, "forged", key[signing]))
    client.rpush(QUEUE_KEY, job_id)
    return job_id, reply_to


def job_status(client: redis.Redis, job_id: str) -> bytes | None:
    return client.hget(f"rq:job:{job_id}", "status")


def markers(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def start_worker(workers: WorkerProcesses, url: str, marker_dir: Path, **env: str) -> Any:
    marker_dir.mkdir(exist_ok=True)
    [proc] = workers.start(url, env={"RIVERS_SECRET": SECRET, "FORGERY_MARKERS": str(marker_dir), **env})
    return proc


def assert_still_serves(proc: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker is alive and runs a legitimate, signed run through Redis."""
    assert proc.poll() is None
    monkeypatch.setenv("RIVERS_SECRET", SECRET)
    repo = dp.make_repo([dp.source, dp.doubled], tmp_path / "legit")
    result = repo.materialize()
    assert result.success, result.failed_assets
    assert repo.load_node("doubled") == 42
    assert proc.poll() is None


# -- 1. forged jobs are refused before anything is decoded, imported or unpickled ---------------------------


@pytest.mark.parametrize(("vector", "signing"), [*((v, s) for v in VECTORS for s in ("unsigned", "mis-signed")),
                                                 ("import", "transplanted")])
def test_a_forged_job_leaves_no_side_effect(
    vector: str, signing: str, redis_url: str, workers: WorkerProcesses, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    marker_dir = tmp_path / "markers"
    proc = start_worker(workers, redis_url, marker_dir)
    client = redis.Redis.from_url(redis_url)
    forge, _ = VECTORS[vector]
    job_id, reply_to = push_job(client, forge(tmp_path, b"attacker's guess"), signing)

    wait_for(lambda: job_status(client, job_id) == b"failed", 10, message="the forged job to be refused")
    assert markers(marker_dir) == []
    reason = client.hget(f"rq:job:{job_id}", "exc_info").decode()
    expected = REFUSALS[signing]
    assert expected in reason and "RIVERS_SECRET" in reason, reason
    assert client.llen(reply_to) == 0  # nothing reported to whoever forged it
    assert not client.exists(f"rivers:lease:{job_id}")
    wait_for(lambda: any(json.loads(line).get("event") == "worker.refused_job" and job_id in line
                         and expected in line for line in workers.logs().splitlines() if line.startswith("{")),
             10, message="the refusal in the worker's log")

    assert_still_serves(proc, tmp_path, monkeypatch)
    assert markers(marker_dir) == []  # nor did anything of it run later


@pytest.mark.parametrize("vector", list(VECTORS))
def test_control_the_same_payload_signed_does_leave_its_marker(
    vector: str, redis_url: str, workers: WorkerProcesses, tmp_path: Path
) -> None:
    """What the tests above forge is effective when signed: their empty marker directories mean something."""
    marker_dir = tmp_path / "markers"
    start_worker(workers, redis_url, marker_dir)
    client = redis.Redis.from_url(redis_url)
    forge, event = VECTORS[vector]
    job_id, reply_to = push_job(client, forge(tmp_path, SECRET.encode()), "signed")

    wait_for(lambda: any(name.startswith(f"{event}-") for name in markers(marker_dir)), 20,
             message=f"the '{event}' marker of a signed job")
    popped = client.blpop([reply_to], timeout=20)
    assert popped is not None, "the signed job was never reported"
    assert decode_report(popped[1], SECRET.encode())[0] == job_id
    assert TARGETS not in sys.modules


# -- 2. forged reports: refused with a secret, never an import without one -----------------------------------


def _forge_report_during_a_run(
    redis_url: str, tmp_path: Path
) -> tuple[threading.Thread, dict[str, Any], dp.Scratch, redis.Redis]:
    """Start dp.gated in a thread; once its step runs in the worker, push a forged report of it naming ForgedError."""
    repo = dp.make_repo([dp.source, dp.gated, dp.after_gated], tmp_path / "run")
    run_id = str(uuid.uuid4())  # this run's keys, whatever else Redis holds
    outcome: dict[str, Any] = {"repo": repo}

    def run() -> None:
        try:
            outcome["result"] = repo.materialize(run_id_override=run_id)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    scratch = repo.resources["scratch"]
    client = redis.Redis.from_url(redis_url)
    wait_for(lambda: scratch.lines("gated"), 30, message="the gated step to run in the worker")
    job_id = client.hget(f"rivers:run:{run_id}:jobs", "gated").decode()
    data = client.hget(f"rq:job:{job_id}", "data")
    _func, _, (spec_json, _reply), _ = json.loads(job_payload(data, len(data) * 1000) or b"")
    outputs = [out["name"] for out in json.loads(spec_json)["outputs"]]
    error = StepError(type="ForgedError", module=TARGETS, message="forged by an attacker")
    forged = StepResult(run_id=run_id, step_key="gated", attempt=1, status="failed", error=error,
                        outputs=[{"name": name, "status": "failed", "error": error} for name in outputs])
    client.rpush(f"rivers:run:{run_id}:results", f"{job_id} - {forged.model_dump_json()}")
    outcome["results_key"] = f"rivers:run:{run_id}:results"
    return thread, outcome, scratch, client


def test_an_unsigned_report_is_refused_and_the_run_completes(
    redis_url: str, workers: WorkerProcesses, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker_dir = tmp_path / "markers"
    start_worker(workers, redis_url, marker_dir)
    monkeypatch.setenv("RIVERS_SECRET", SECRET)
    monkeypatch.setenv("FORGERY_MARKERS", str(marker_dir))  # an import here would leave its marker too
    # rivers logs to whatever sys.stderr is when it writes: a buffer of our own, read without truncating it
    # (capfd's readouterr() truncates its file, and a line another thread writes meanwhile is lost)
    logged = io.StringIO()
    monkeypatch.setattr(sys, "stderr", logged)
    thread, outcome, scratch, client = _forge_report_during_a_run(redis_url, tmp_path)
    try:
        wait_for(lambda: "redis.report_refused" in logged.getvalue(), 10,
                 message="the coordinator to refuse the forged report")
    except AssertionError as exc:
        (Path(scratch.dir) / "open").touch()  # let the run end: it must not outlive this test
        key = outcome["results_key"]
        raise AssertionError(f"{exc}; {key} holds {client.lrange(key, 0, -1)!r}; logged:\n"
                             f"{logged.getvalue()[-3000:]}") from None
    assert "is not signed with RIVERS_SECRET" in logged.getvalue()
    (Path(scratch.dir) / "open").touch()
    thread.join(30)
    assert not thread.is_alive()
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    assert result.success, result.failed_assets
    assert sorted(result.materialized_assets) == ["after_gated", "gated", "source"]
    assert outcome["repo"].load_node("after_gated") == 22
    assert markers(marker_dir) == [] and TARGETS not in sys.modules


def test_without_a_secret_a_report_never_imports_its_error_module(
    redis_url: str, workers: WorkerProcesses, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis is trusted without a secret, so the forged failure stands, but its error type is only named."""
    marker_dir = tmp_path / "markers"
    marker_dir.mkdir()
    workers.start(redis_url, env={"FORGERY_MARKERS": str(marker_dir)})
    monkeypatch.setenv("FORGERY_MARKERS", str(marker_dir))
    thread, outcome, scratch, _client = _forge_report_during_a_run(redis_url, tmp_path)
    thread.join(30)
    (Path(scratch.dir) / "open").touch()  # let the real attempt end in the worker
    assert not thread.is_alive()
    error = outcome.get("error")
    assert type(error) is ExecutionError, repr(error)
    assert "ForgedError: forged by an attacker" in str(error)
    assert markers(marker_dir) == [] and TARGETS not in sys.modules


def test_a_worker_without_the_secret_fails_the_step_instead_of_hanging_the_run(
    redis_url: str, workers: WorkerProcesses, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Coordinator with RIVERS_SECRET, worker without (a misconfiguration, or an attacker's entry in the reports
    hash): the coordinator rightly refuses the unsigned report, but the step must then fail, naming RIVERS_SECRET,
    within a few watcher ticks instead of waiting forever.

    Fails today (rivers bug): RedisHub._check finds the report in `rivers:run:<id>:reports`, re-delivers it every
    tick (refused, logged, again) and `continue`s past the lease and status checks, so the run never ends.
    """
    monkeypatch.setenv("RIVERS_SECRET", SECRET)
    workers.start(redis_url)  # no RIVERS_SECRET
    repo = dp.make_repo([dp.source], tmp_path)
    outcome: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: outcome.update(result=repo.materialize(raise_on_error=False)),
                              daemon=True)
    thread.start()
    client = redis.Redis.from_url(redis_url)
    try:
        wait_for(lambda: not thread.is_alive(), 8,
                 message="the run to end (it hangs: the coordinator refuses the stored unsigned report every tick)")
        [(name, message)] = outcome["result"].failed_assets
        assert name == "source" and "RIVERS_SECRET" in message, message
    finally:
        if thread.is_alive():  # end the hung run so that it does not outlive the test: fail its pending step
            [jobs_key] = client.keys("rivers:run:*:jobs")
            _hubs[redis_url].fail_run(jobs_key.decode().split(":")[2], ExecutionError("ended by the test"))
            thread.join(10)


# -- 3. bounded decompression ---------------------------------------------------------------------------------


def test_a_signed_zlib_bomb_is_refused_in_bounded_memory(
    redis_url: str, workers: WorkerProcesses, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = 1_000_000
    proc = start_worker(workers, redis_url, tmp_path / "markers", RIVERS_MAX_PAYLOAD_BYTES=str(limit))
    deflate = zlib.compressobj(1)
    zeros = bytes(16 << 20)
    bomb = b"".join([deflate.compress(zeros) for _ in range(64)] + [deflate.flush()])  # 1 GiB once inflated
    client = redis.Redis.from_url(redis_url)
    job_id = uuid.uuid4().hex
    signature = hmac.new(SECRET.encode(), f"{job_id}\n".encode() + bomb, hashlib.sha256).hexdigest()
    client.hset(f"rq:job:{job_id}", mapping={"data": bomb, "rivers_signature": signature, "status": "queued",
                                             "origin": QUEUE})
    client.rpush(QUEUE_KEY, job_id)

    wait_for(lambda: job_status(client, job_id) == b"failed", 10, message="the bomb to be refused")
    reason = client.hget(f"rq:job:{job_id}", "exc_info").decode()
    assert f"larger than {limit} bytes once decompressed" in reason and "RIVERS_MAX_PAYLOAD_BYTES" in reason
    rss = psutil.Process(proc.pid).memory_info().rss
    assert rss < 300 * 2**20, f"worker RSS {rss / 2**20:.0f} MiB after the bomb"
    status = Path(f"/proc/{proc.pid}/status").read_text()
    peak_kib = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
    assert peak_kib < 300 * 1024, f"worker peak RSS {peak_kib // 1024} MiB while refusing the bomb"
    assert_still_serves(proc, tmp_path, monkeypatch)


# -- 4. unreadable specs fail at once, saying why -------------------------------------------------------------


def _future_protocol(spec: dict[str, Any]) -> None:
    spec["protocol"] = 999


def _bad_attempt(spec: dict[str, Any]) -> None:
    spec["attempt"] = "x"


def _no_outputs(spec: dict[str, Any]) -> None:
    del spec["outputs"]


def test_unreadable_specs_are_reported_failed_at_once_naming_field_and_versions(
    redis_url: str, workers: WorkerProcesses, tmp_path: Path
) -> None:
    """Signed jobs whose spec a newer rivers wrote (protocol 999) or whose schema is wrong: one worker, three jobs."""
    start_worker(workers, redis_url, tmp_path / "markers")
    client = redis.Redis.from_url(redis_url)
    sent = {}
    for field, change in (("protocol", _future_protocol), ("attempt", _bad_attempt), ("outputs", _no_outputs)):
        spec = real_spec(tmp_path, tmp_path / "store")
        spec["rivers_version"] = "9.9.9"
        change(spec)
        sent[field] = (spec, time.monotonic(), *push_job(client, spec, "signed"))
    for field, (spec, at, job_id, reply_to) in sent.items():
        popped = client.blpop([reply_to], timeout=5)
        assert popped is not None, f"{field}: no report for an unreadable spec"
        assert time.monotonic() - at < 3, f"{field}: reported only after its lease expired"
        reported_id, result_json = decode_report(popped[1], SECRET.encode())
        assert reported_id == job_id
        result = StepResult.model_validate_json(result_json)
        error = result.error
        assert result.status == "failed" and error is not None, field
        assert (error.type, error.module, error.infrastructure) == ("UnreadableSpec", "rivers.spec", False), field
        message = error.message
        assert "rivers 9.9.9" in message and f"rivers {RIVERS_VERSION}" in message, message
        if field == "protocol":
            assert "spec protocol 999" in message and f"spec protocol {PROTOCOL}" in message, message
        else:
            assert f"field '{field}'" in message, message
        if field != "attempt":  # the step is still named when its identity could be read
            assert (result.run_id, result.step_key) == (spec["run_id"], "doubled"), field
        assert job_status(client, job_id) == b"failed", field
