"""The Kubernetes pod launcher through the tests' fake cluster: what a pod per step costs, and a 10-wide fan of pods.

    python benchmarks/kubernetes.py [--repeats 3] [--chain 10] [--sleepers 50] [--width 10] [--sleep 0.5]

It starts its own redis-server on a free port, a FakeCluster (tests/kubernetes/fake_cluster.py: an API server, a
Job controller and a kubelet that runs every pod as a local process, image "rivers-worker:test" = this venv and
this repository), one pod launcher (`rivers-worker --executor kubernetes`) and, for the comparison, one warm
`rivers-worker --executor parallel --concurrency 1`; the runs are embedded (`repo.materialize()` here, with
RIVERS_REDIS_URL set). It prints medians of REPEATS runs:
(1) a chain of CHAIN trivial steps, max_concurrent_steps=1: per step, the median time from the coordinator
    queueing it to each moment of its life, in the order they happen: the launcher's `launcher.job_created` (its
    JSON log), the fake kubelet starting and reaping the pod's process (the fake API's own pod events), the step
    function starting and ending in the pod (StepResult.started_at, duration_s), the coordinator seeing the result,
    the launcher's `launcher.pod_succeeded`; next to the same chain through one warm parallel worker, and the
    ratio of their wall times. A fake pod is a fresh Python interpreter running `rivers-worker --step`: most of
    its cost is that start-up, also measured alone (`python -c "import ..."`), and its CPU time per pod;
(2) SLEEPERS independent steps sleeping SLEEP s with max_concurrent_steps=WIDTH: the wall time next to the ideal
    (SLEEPERS / WIDTH waves x SLEEP), to that ideal plus one per-step time of (1) per wave, and to the floor the
    pods' CPU time puts on it here (the CPU time of this process's reaped children: the kubelet's pod processes
    / the CPUs); the most pods the fake cluster saw Running (and not yet ended) at once, against the limit the
    coordinator counts in steps, and the most step functions that ran at once.
Steps are module-level assets made here; pods and workers import them from `benchmarks.kubernetes`.
Nothing is written to the repository: values go to a temporary directory (PickleIOHandler on an obstore
LocalStore), logs too.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Run as a script, this directory comes first on sys.path, and this file would shadow the `kubernetes` client.
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import rivers as rs  # noqa: E402

if TYPE_CHECKING:
    from tests.kubernetes.fake.store import Event
    from tests.kubernetes.fake_cluster import FakeCluster

WORKER_IMAGE = "rivers-worker:test"  # as in tests/kubernetes/conftest.py
NAMESPACE = "default"
MAX_CHAIN, MAX_SLEEPERS = 100, 500
SLEEP_ENV = "RIVERS_BENCH_SLEEP_S"  # how long a sleeper sleeps, read in the pod (the assets are made at import)


def _asset(name: str, body: str, params: str = "") -> rs.SingleAsset:
    namespace: dict[str, Any] = {"__name__": __name__, "time": time, "os": os}
    exec(f"def {name}({params}):\n    {body}\n", namespace)
    asset = rs.Asset(namespace[name])
    globals()[name] = asset  # importable by reference: module attribute == the definition
    return asset


CHAINED = [_asset(f"link_{i}", "return 1", f"link_{i - 1}" if i else "") for i in range(MAX_CHAIN)]
SLEEPERS = [_asset(f"sleeper_{i}", f"time.sleep(float(os.environ.get('{SLEEP_ENV}', '0.5')))")
            for i in range(MAX_SLEEPERS)]


# -- measuring ---------------------------------------------------------------------------------------
# The moments of one step, in epoch seconds (one machine: every process shares the clock). Each is None when
# it was not seen (a warm worker has no Job and no pod).
QUEUED = "queued"  # the coordinator dispatched the step (its `started` step event)
JOB_CREATED = "Job created (launcher log: launcher.job_created)"
POD_STARTED = "pod process started (fake kubelet: Running)"
STEP_STARTED = "step function started (StepResult.started_at)"
STEP_ENDED = "step function ended (+ duration_s)"
POD_ENDED = "pod process exited (fake kubelet: Succeeded)"
LAUNCHER_SAW_END = "launcher.pod_succeeded logged (it saw the pod end)"
SEEN = "result seen by the coordinator"
Timeline = dict[str, float | None]


@dataclass
class Recorder:
    """Step events of the coordinator (rivers.run.listening) and pod events of the fake API server."""

    steps: dict[str, dict[str, float]] = field(default_factory=dict)
    cluster_events: list[tuple[float, Event]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_step(self, event: str, step: Any, result: Any) -> None:
        with self.lock:
            self.steps.setdefault(step.key, {}).setdefault(event, time.time())

    def on_cluster(self, event: Event) -> None:  # called under the store's lock: record, nothing else
        if event.resource == "pods":
            self.cluster_events.append((time.time(), event))

    def clear(self) -> None:
        with self.lock:
            self.steps.clear()
            self.cluster_events.clear()


def launcher_events(log: Path, event: str) -> dict[str, float]:
    """Job name -> epoch time of the launcher's `event` lines (JSON, ISO timestamps in UTC)."""
    found: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == event and "job" in entry:
            found.setdefault(entry["job"], datetime.fromisoformat(entry["timestamp"]).timestamp())
    return found


def timelines(result: rs.RunResult, recorder: Recorder, launcher_log: Path | None) -> list[Timeline]:
    """The steps of one run, in the order the coordinator queued them."""
    from rivers.kubernetes.manifests import RUN_ID_LABEL, STEP_KEY_ANNOTATION, job_name, label_value

    created = launcher_events(launcher_log, "launcher.job_created") if launcher_log else {}
    ended = launcher_events(launcher_log, "launcher.pod_succeeded") if launcher_log else {}
    pods: dict[str, dict[str, float]] = {}  # step key -> phase -> first seen
    run_label = label_value(result.run_id)
    for at, event in list(recorder.cluster_events):
        meta = event.obj["metadata"]
        if (meta.get("labels") or {}).get(RUN_ID_LABEL) == run_label:
            key = (meta.get("annotations") or {}).get(STEP_KEY_ANNOTATION, "")
            pods.setdefault(key, {}).setdefault(event.obj.get("status", {}).get("phase", ""), at)
    out: list[Timeline] = []
    for key, step in result.step_results.items():
        events, name = recorder.steps.get(key, {}), job_name(result.run_id, key, step.attempt)
        out.append({QUEUED: events.get("started"), JOB_CREATED: created.get(name),
                    POD_STARTED: pods.get(key, {}).get("Running"), STEP_STARTED: step.started_at,
                    STEP_ENDED: step.started_at + step.duration_s, POD_ENDED: pods.get(key, {}).get("Succeeded"),
                    LAUNCHER_SAW_END: ended.get(name), SEEN: events.get("succeeded")})
    return sorted(out, key=lambda t: t[QUEUED] or 0.0)


def between(steps: Sequence[Timeline], start: str, end: str) -> float | None:
    """Median over the steps of end - start, where both were seen."""
    values = [t[end] - t[start] for t in steps if t[start] is not None and t[end] is not None]  # type: ignore[operator]
    return statistics.median(values) if values else None


def children_cpu() -> float:
    """CPU seconds of the ended children of this process: the fake kubelet runs every pod as one of them."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# -- runs --------------------------------------------------------------------------------------------
def run(assets: list[rs.SingleAsset], executor: rs.Executor, store: Path,
        recorder: Recorder) -> tuple[float, rs.RunResult]:
    from obstore.store import LocalStore

    from rivers.run import listening

    repo = rs.CodeRepository(list[rs.Asset](assets), default_io_handler=rs.PickleIOHandler(LocalStore(str(store))),
                             default_executor=executor)
    recorder.clear()
    with listening(recorder.on_step):
        start = time.perf_counter()
        result = repo.materialize(raise_on_error=False)
        wall = time.perf_counter() - start
    if not result.success:
        raise RuntimeError(f"the run failed: {result.failed_assets}")
    return wall, result


@dataclass
class Runs:
    """What REPEATS runs of one kind measured."""

    walls: list[float] = field(default_factory=list)
    steps: list[Timeline] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)  # chain: result seen -> the next step queued
    pod_cpu: list[float] = field(default_factory=list)  # CPU seconds of the pods of each run
    peak_running: list[int] = field(default_factory=list)  # pods Running at once (fake cluster)
    peak_pods: list[int] = field(default_factory=list)  # pods not yet ended at once
    peak_steps: list[int] = field(default_factory=list)  # step functions executing at once


def repeat(assets: list[rs.SingleAsset], executor: rs.Executor, store: Path, recorder: Recorder, repeats: int,
           launcher_log: Path | None = None, cluster: FakeCluster | None = None) -> Runs:
    runs = Runs()
    for _ in range(repeats):
        if cluster is not None:
            wait_pods_gone(cluster)  # the previous run's pods are not this one's
            cluster.reset_peaks()
        cpu = children_cpu()
        wall, result = run(assets, executor, store, recorder)
        steps = timelines(result, recorder, launcher_log)
        runs.walls.append(wall)
        runs.steps += steps
        runs.gaps += [b[QUEUED] - a[SEEN] for a, b in itertools.pairwise(steps)  # type: ignore[operator]
                      if a[SEEN] is not None and b[QUEUED] is not None]
        edges = sorted([(t[STEP_STARTED], 1) for t in steps] + [(t[STEP_ENDED], -1) for t in steps])  # type: ignore[misc]
        runs.peak_steps.append(max(itertools.accumulate(change for _, change in edges)))
        if cluster is not None:
            wait_pods_gone(cluster)  # every pod ended and was reaped: its CPU time is counted
            runs.pod_cpu.append(children_cpu() - cpu)
            runs.peak_running.append(cluster.peak_running)
            runs.peak_pods.append(cluster.peak_pods)
    return runs


# -- processes ---------------------------------------------------------------------------------------
def worker_env(extra: dict[str, str]) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RIVERS_")}
    environ.update({"RIVERS_LOG_FORMAT": "json", "RIVERS_LOG_LEVEL": "INFO", "PYTHONPATH": str(ROOT), **extra})
    return environ


def wait_registered(url: str, executor: str, process: subprocess.Popen[bytes], log: Path) -> None:
    import redis

    from rivers.queues.redis import live_workers

    client = redis.Redis.from_url(url)
    try:
        deadline = time.monotonic() + 60
        while not live_workers(client, executor):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the {executor} worker did not register:\n{log.read_text(errors='replace')}")
            time.sleep(0.05)
    finally:
        client.close()


@contextmanager
def worker_process(url: str, executor: str, args: list[str], log: Path,
                   env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """`rivers-worker --executor EXECUTOR` (a pod launcher for kubernetes), registered, stopped at the end."""
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "rivers.cli.worker", "--executor", executor,
                                    "--redis-url", url, *args], cwd=ROOT, env=worker_env(env or {}),
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_registered(url, executor, process, log)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.send_signal(signal.SIGTERM)  # twice: leave at once (a launcher would follow its pods first)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def wait_pods_gone(cluster: FakeCluster, timeout: float = 60.0) -> None:
    """No pod left that has not ended (the launcher deletes each Job once its pod succeeded)."""
    deadline = time.monotonic() + timeout
    while any(pod["status"].get("phase") not in ("Succeeded", "Failed") for pod in cluster.pods(NAMESPACE)):
        if time.monotonic() > deadline:
            raise RuntimeError("step pods still running after the run")
        time.sleep(0.05)


def interpreter_start(command: list[str], repeats: int) -> float:
    """Median wall time of a fresh interpreter running `command` (the fixed cost of every fake pod)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# -- output ------------------------------------------------------------------------------------------
def ms(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) < 0.00005:
        value = 0.0  # no "-0.0 ms"
    return f"{value * 1000:,.0f} ms" if abs(value) >= 0.0995 else f"{value * 1000:.1f} ms"


def chain_table(pods: Runs, warm: Runs, steps: int) -> list[str]:
    """Per step, each moment since the step was queued, in the order they happen to a pod."""
    moments = [m for m in (JOB_CREATED, POD_STARTED, STEP_STARTED, STEP_ENDED, POD_ENDED, LAUNCHER_SAW_END, SEEN)
               if between(pods.steps, QUEUED, m) is not None]
    moments.sort(key=lambda m: between(pods.steps, QUEUED, m) or 0.0)
    rows = [("", "since queued", "+ previous", "since queued")]
    previous = QUEUED
    for moment in moments:
        rows.append((moment, ms(between(pods.steps, QUEUED, moment)), ms(between(pods.steps, previous, moment)),
                     ms(between(warm.steps, QUEUED, moment))))
        previous = moment
    rows.append(("result seen -> next step queued (coordinator)", ms(statistics.median(pods.gaps)), "",
                 ms(statistics.median(warm.gaps))))
    rows.append((f"run wall time / {steps} steps", ms(statistics.median(pods.walls) / steps), "",
                 ms(statistics.median(warm.walls) / steps)))
    width = max(len(row[0]) for row in rows)
    lines = [f"    {'':{width}}  {'a pod per step':^26}  {'warm worker':>12}"]
    lines += [f"    {label:{width}}  {a:>13} {b:>12}  {c:>12}" for label, a, b, c in rows]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chain", type=int, default=10, help=f"steps of the chain (at most {MAX_CHAIN})")
    parser.add_argument("--sleepers", type=int, default=50, help=f"independent steps (at most {MAX_SLEEPERS})")
    parser.add_argument("--width", type=int, default=10, help="max_concurrent_steps of the independent steps")
    parser.add_argument("--sleep", type=float, default=0.5, help="seconds each independent step sleeps")
    args = parser.parse_args()
    if not (args.repeats >= 1 and 2 <= args.chain <= MAX_CHAIN and 1 <= args.sleepers <= MAX_SLEEPERS
            and args.width >= 1):
        parser.error(f"--repeats >= 1, --chain 2..{MAX_CHAIN}, --sleepers 1..{MAX_SLEEPERS}, --width >= 1")

    os.environ["RIVERS_LOG_LEVEL"] = "WARNING"  # the coordinator's step events on a terminal would be measured
    for name in ("RIVERS_SECRET", "KUBECONFIG"):
        os.environ.pop(name, None)
    from tests.kubernetes.fake_cluster import FakeCluster, Image
    from tests.redis_server import RedisServer

    venv_bin = str(Path(sys.executable).parent)
    images = {WORKER_IMAGE: Image(env={"PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin",
                                       "PYTHONPATH": str(ROOT), SLEEP_ENV: str(args.sleep)}, workdir=str(ROOT))}
    chain, sleepers = CHAINED[: args.chain], SLEEPERS[: args.sleepers]
    one_at_a_time = rs.Executor.kubernetes(max_concurrent_steps=1)
    recorder = Recorder()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rivers-bench-k8s-") as tmp, RedisServer() as server, \
            FakeCluster(images=images) as cluster:
        work = Path(tmp)
        store = work / "store"
        store.mkdir()
        kubeconfig = cluster.write_kubeconfig(work / "kubeconfig")
        cluster.add_secret(NAMESPACE, "rivers-redis", {"url": server.url})
        cluster.store.subscribers.append(recorder.on_cluster)
        os.environ["RIVERS_REDIS_URL"] = server.url
        launcher_log = work / "launcher.log"
        with worker_process(server.url, "kubernetes", ["--kubeconfig", str(kubeconfig)], launcher_log,
                            {"RIVERS_WORKER_IMAGE": WORKER_IMAGE}):
            run(chain[:2], one_at_a_time, store, recorder)  # warm: the pods' imports are cached, the launcher is up
            pods = repeat(chain, one_at_a_time, store, recorder, args.repeats, launcher_log, cluster)
            fan = repeat(sleepers, rs.Executor.kubernetes(max_concurrent_steps=args.width), store, recorder,
                         args.repeats, launcher_log, cluster)
            jobs_left = len(cluster.jobs(NAMESPACE))
        with worker_process(server.url, "parallel", ["--concurrency", "1"], work / "worker.log"):
            run(chain[:2], rs.Executor.parallel(), store, recorder)  # warm the pool process
            warm = repeat(chain, rs.Executor.parallel(), store, recorder, args.repeats)
        oom_mode = cluster.oom_mode
        noted = [line for line in launcher_log.read_text(errors="replace").splitlines()
                 if not line.startswith("{") or any(f'"level": "{level}"' in line for level in ("warning", "error"))]
    bare = interpreter_start([sys.executable, "-c", "pass"], args.repeats)
    imports = interpreter_start([sys.executable, "-c", "import rivers.cli.worker, rivers.distributed.step_pod, "
                                 "rivers.executors.pool_process, benchmarks.kubernetes"], args.repeats)
    total = time.perf_counter() - started

    cpus = os.cpu_count() or 1
    pod_step = statistics.median(pods.walls) / args.chain
    warm_step = statistics.median(warm.walls) / args.chain
    in_pod = between(pods.steps, POD_STARTED, STEP_STARTED) or 0.0
    cpu_per_pod = statistics.median(pods.pod_cpu) / args.chain
    print(f"Kubernetes pod launcher through the fake cluster: {cpus} CPUs, medians of {args.repeats} runs; pods "
          f"are local processes (memory limits by {oom_mode})")
    print(f"\n(1) chain of {args.chain} trivial steps, one at a time (max_concurrent_steps=1), per step")
    print("\n".join(chain_table(pods, warm, args.chain)))
    print(f"    a pod per step: {pod_step / warm_step:,.0f}x the wall time of a warm `rivers-worker --executor "
          f"parallel --concurrency 1`; {ms(cpu_per_pod)} of CPU per pod")
    print(f"    a fresh interpreter alone: `python -c pass` {ms(bare)}; importing what a step pod imports "
          f"(rivers.cli.worker, step_pod, pool_process, the steps' module) {ms(imports)}")

    waves = -(-args.sleepers // args.width)
    ideal = waves * args.sleep
    fan_wall = statistics.median(fan.walls)
    fan_cpu = statistics.median(fan.pod_cpu)
    serial = ideal + waves * pod_step  # every wave pays the per-step cost of (1) once
    peak_running, peak_pods, peak_steps = max(fan.peak_running), max(fan.peak_pods), max(fan.peak_steps)
    rows = [
        ("wall time", f"{fan_wall:.2f} s", "runs: " + ", ".join(f"{w:.2f} s" for w in fan.walls)),
        (f"ideal: {waves} waves x {args.sleep:g} s", f"{ideal:.2f} s", ""),
        (f"ideal + {waves} x the per-step wall time of (1)", f"{serial:.2f} s", "if pods started as fast as alone"),
        (f"pods' CPU time / {cpus} CPUs", f"{fan_cpu / cpus:.2f} s",
         f"{fan_cpu:.1f} s of CPU, {ms(fan_cpu / args.sleepers)} a pod: a floor on this machine"),
        ("queued -> step function started", ms(between(fan.steps, QUEUED, STEP_STARTED)),
         f"median; {ms(between(pods.steps, QUEUED, STEP_STARTED))} one at a time"),
        ("peak pods Running at once (fake cluster)", str(peak_running),
         "per run: " + ", ".join(map(str, fan.peak_running)) + f"; limit {args.width} steps"),
        ("peak pods not yet ended at once", str(peak_pods), "per run: " + ", ".join(map(str, fan.peak_pods))),
        ("peak step functions running at once", str(peak_steps), "per run: " + ", ".join(map(str, fan.peak_steps))),
        ("Jobs left in the cluster after the runs", str(jobs_left), ""),
    ]
    print(f"\n(2) {args.sleepers} independent steps sleeping {args.sleep:g} s, max_concurrent_steps={args.width}")
    width = max(len(label) for label, _, _ in rows)
    for label, value, note in rows:
        print(f"    {label:{width}}  {value:>9}  {note}".rstrip())

    seen_after_exit = (between(pods.steps, QUEUED, SEEN) or 0.0) > (between(pods.steps, QUEUED, POD_ENDED) or 0.0)
    within = peak_running <= args.width
    print(f"\nSummary: a step run as a pod costs {ms(pod_step)} of wall time here against {ms(warm_step)} through a "
          f"warm parallel worker ({pod_step / warm_step:,.0f}x). The launcher is not where it goes (queued -> Job "
          f"created {ms(between(pods.steps, QUEUED, JOB_CREATED))}) nor the fake cluster (Job -> process "
          f"{ms(between(pods.steps, JOB_CREATED, POD_STARTED))}): {in_pod / pod_step:.0%} of it is the pod's fresh "
          f"Python interpreter starting `rivers-worker --step` and importing rivers and the step's module before the "
          f"step function starts ({ms(in_pod)}; the imports alone take {ms(imports)}, {ms(cpu_per_pod)} of CPU a "
          f"pod), a cost a real cluster adds to its own scheduling, image and container start. The coordinator sees "
          f"a result {'after' if seen_after_exit else 'before'} the pod's process has exited"
          f"{' (the launcher pushes the report it kept)' if seen_after_exit else ''}. {args.sleepers} steps of "
          f"{args.sleep:g} s, {args.width} at a time, took {fan_wall:.2f} s against an ideal {ideal:.2f} s "
          f"({fan_wall / ideal:.1f}x): {args.width} interpreters starting at once on {cpus} CPUs are CPU-bound, "
          f"the pods' {fan_cpu:.0f} s of CPU alone needing {fan_cpu / cpus:.1f} s. The fake cluster saw at most "
          f"{peak_running} pods Running at once, "
          + (f"within max_concurrent_steps={args.width}." if within else
             f"OVER max_concurrent_steps={args.width}: the coordinator counts steps, and a pod that has reported "
             "still runs until its process exits.")
          + f" (Total time of this benchmark: {total:.0f} s.)")
    if noted:
        print(f"\nThe launcher logged {len(noted)} warning, error or non-JSON lines; the first ones:")
        for line in noted[:10]:
            print(f"    {line[:300]}")


if __name__ == "__main__":
    import benchmarks.kubernetes as this  # pods import the assets from `benchmarks.kubernetes`, not __main__

    this.main()
