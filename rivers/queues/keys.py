"""Every Redis key, hash field and status rivers uses, in one place; and the life of a step's job.

Step queues are RQ queues, so RQ's own names (`rq:queue:<name>`, `rq:job:<id>`, its registries and
worker hashes: rq_view.py) hold the jobs and RQ's tools show them; everything else lives under `rivers:`.

One attempt of one step is one job; its id is the attempt's fencing token (a retry is a new job):

    coordinator: HSET rq:job:<id> (signed) + RPUSH rq:queue:rivers:<executor>        status QUEUED
        │          HSET rivers:run:<run>:jobs <step> <id>    (a coordinator taking the run over finds it)
        ▼
    worker: BLMPOP + CLAIM script: SET rivers:lease:<id> <worker> PX LEASE_MS        status STARTED
        │   (renewed every HEARTBEAT_S; only the holder of the lease may write outputs or report)
        ├─ reported: REPORT script, only while the lease names this worker:        status FINISHED | FAILED
        │     RPUSH rivers:run:<run>:results + HSET rivers:run:<run>:reports <id>, DEL lease
        ├─ lost: the lease expired (worker dead, paused, cut off) and the coordinator's watcher saw it twice:
        │     the coordinator fails the attempt (infrastructure) and retries as a new job; status FAILED;
        │     a late report of the old attempt is refused by the REPORT script (its lease is gone)
        ├─ refused: unsigned, mis-signed, oversized or not a rivers step: status FAILED with exc_info; the
        │     coordinator fails the step with that reason (nothing of the job was run or imported)
        └─ handed back: second SIGTERM: DEL lease, LPUSH back on the queue                status QUEUED

A step whose last missing input is being made by one running attempt may be armed on it ahead (the coordinator
has decided it runs once that attempt succeeds; RQ calls such a job deferred):

    coordinator: ARM script, only while the upstream's job is queued or started and unreported:
        HSET rq:job:<id> (signed, + where it goes) + RPUSH rivers:after:<upstream id> <id>   status DEFERRED
    upstream's REPORT script, in the same atomic step as the report:
        ├─ succeeded, and the run's token is still the arming coordinator's: RPUSH on its queue,
        │     HSET rivers:run:<run>:jobs <step> <id>                                         status QUEUED
        └─ failed, or the run was taken over meanwhile: DEL rq:job:<id> (the coordinator decides again)
    an upstream that ends without a report (lost, vanished, refused): the coordinator disarms (DISARM script)

Exactly one report reaches the run: the coordinator takes a job id out of its pending table once, whether the
report came from the results list, from the reports hash (a list message taken by a coordinator that died), or
from its own watcher (lost, vanished, refused, never picked up).
"""

from __future__ import annotations

RQ_QUEUE_PREFIX = "rq:queue:"  # RQ's Queue.redis_queue_namespace_prefix
RQ_JOB_PREFIX = "rq:job:"  # RQ's Job.redis_job_namespace_prefix
LEASE_PREFIX = "rivers:lease:"  # + job id -> name of the worker running it (PX LEASE_MS)
WORKER_PREFIX = "rivers:worker:"  # + worker name -> its executor (PX WORKER_TTL_MS): the worker is alive
STEP_JOB_FUNCTION = "rivers.distributed.jobs.run_step_job"  # the only job function a rivers worker runs
RQ_QUEUES = "rq:queues"  # RQ's set of queue keys (rq info lists the queues from it)

# -- fields of a job hash (rq:job:<id>): RQ's names, so RQ's tools read them, and one of ours -----------
JOB_DATA = "data"  # JSON [function, null, [spec_json, reply_to], {}], zlib of it when large
JOB_SIGNATURE = "rivers_signature"  # HMAC-SHA256 of "<job id>\n<data>" under RIVERS_SECRET
JOB_STATUS = "status"  # QUEUED -> STARTED -> FINISHED | FAILED (or back to QUEUED when handed back)
JOB_ORIGIN = "origin"  # the queue name
JOB_DESCRIPTION = "description"  # "<run id> <step key>"
JOB_WORKER = "worker_name"  # the worker holding its lease
JOB_CREATED_AT = "created_at"
JOB_ENQUEUED_AT = "enqueued_at"
JOB_STARTED_AT = "started_at"
JOB_ENDED_AT = "ended_at"
JOB_EXC_INFO = "exc_info"  # why a job failed: the step's error, or why a worker refused to run it
JOB_HEARTBEAT = "last_heartbeat"
JOB_TIMEOUT = "timeout"  # -1: no RQ timeout, the lease decides
JOB_RESULT_TTL = "result_ttl"
JOB_RUNNING_AT = "rivers_running_at"  # when a step process (or a step pod) started running it (epoch s); ours
JOB_LAUNCHER = "rivers_launcher"  # a kubernetes step: the pod launcher that follows its pod (ours, not RQ's)
JOB_AFTER = "rivers_after"  # an armed job: the id of the upstream attempt whose successful report enqueues it
JOB_RUN = "rivers_run"  # an armed job: its run's hash (the token is checked there when it is released)
JOB_TOKEN = "rivers_token"  # an armed job: the token its coordinator drove the run with ('' = not fenced)
JOB_STEP = "rivers_step"  # an armed job: its step key (recorded in the run's jobs hash when it is released)
QUEUED, STARTED, FINISHED, FAILED = "queued", "started", "finished", "failed"  # job statuses, as RQ spells them
DEFERRED = "deferred"  # an armed job, waiting for its upstream's report (RQ's status for a job with depends_on)


def queue_name(executor: str) -> str:
    """The RQ queue name of an executor's steps."""
    return f"rivers:{executor}"


def queue_key(executor: str) -> str:
    return RQ_QUEUE_PREFIX + queue_name(executor)


def job_key(job_id: str) -> str:
    return RQ_JOB_PREFIX + job_id


def lease_key(job_id: str) -> str:
    return LEASE_PREFIX + job_id


AFTER_PREFIX = "rivers:after:"


def after_key(job_id: str) -> str:
    """List of the ids of jobs armed on this one: its successful report enqueues them, any other end drops them."""
    return AFTER_PREFIX + job_id


def worker_key(name: str) -> str:
    return WORKER_PREFIX + name


HAND_PREFIX = "rivers:hand:"


def hand_key(name: str) -> str:
    """The list a worker's BLMOVE moves a job id to; the take script that follows it empties it at once. What a
    dead worker left there (killed between the two) goes back to the queue at the next heartbeat of another."""
    return HAND_PREFIX + name


def stopping_key(name: str) -> str:
    """Set while a worker drains (its first SIGTERM): its step processes' reports claim no downstream job for it."""
    return f"rivers:stopping:{name}"


def workers_key(executor: str) -> str:
    """Set of the names of workers that have consumed this executor's queue."""
    return f"rivers:workers:{executor}"


# -- the pod launcher -------------------------------------------------------------------------------
LAUNCHED = "rivers:kubernetes:launched"  # set of the job ids whose pods a launcher follows (adopted when it dies)
POD_LEASE_PREFIX = "pod:"  # a lease held by a step pod is "pod:<pod name>"; one held by its launcher, its name

RUN_PREFIX = "rivers:run:"  # every key of a run starts so (and a worker pushes reports nowhere else)


def results_key(run_id: str) -> str:
    """List where workers push the reports of a run's steps."""
    return f"{RUN_PREFIX}{run_id}:results"


def wake_key(listener: str) -> str:
    """Pushed to wake a result listener blocked on its keys, when it has a new run to listen to."""
    return f"rivers:wake:{listener}"


# -- runs served by rivers-coordinator ---------------------------------------------------------------
SUBMITTED = "rivers:submitted"  # list of run ids a coordinator should pick up (a wake-up; the record decides)
RUNS = "rivers:runs"  # sorted set: run id by submission time
RUN_REPOSITORY = "repository"  # field of a run's hash: the MODULE:ATTR it is for (none: any coordinator serves it)
RUN_KIND = "kind"  # field of a run's hash: "embedded" for a run recorded by repo.materialize (no coordinator's)
RUN_LOST_AT = "lost_at"  # field of an embedded run's hash: when it was failed for its lapsed alive key (epoch s)


def submitted_key(repository: str) -> str:
    """List of the ids of runs for one repository, taken by the coordinators serving it."""
    return f"{SUBMITTED}:{repository}"


def serving_key(repository: str) -> str:
    """A coordinator serves this repository (PX LEASE_MS, renewed by each serving coordinator's heartbeat)."""
    return f"rivers:serving:{repository}"

RUN_TOKEN = "token"  # field of a run's hash: incremented by each coordinator that takes the run (fencing)


def run_key(run_id: str) -> str:
    """Hash: status, request (JSON), result (JSON), owner, token, created_at, updated_at."""
    return f"{RUN_PREFIX}{run_id}"


def run_alive_key(run_id: str) -> str:
    """An embedded run's process is alive (PX EMBEDDED_ALIVE_MS, renewed): without it, the run was lost with it."""
    return f"{RUN_PREFIX}{run_id}:alive"


def run_owner_key(run_id: str) -> str:
    """The coordinator that owns a run (PX LEASE_MS, renewed): a run without one is taken over."""
    return f"{RUN_PREFIX}{run_id}:owner"


def run_attempts_key(run_id: str) -> str:
    """Hash: '<step key>#<attempt>' -> StepResult JSON of a failed attempt (retried or not): its logs stay readable."""
    return f"{RUN_PREFIX}{run_id}:attempts"


def run_steps_key(run_id: str) -> str:
    """Hash: step key -> final StepResult JSON; a resumed run does not run these again."""
    return f"{RUN_PREFIX}{run_id}:steps"


def run_jobs_key(run_id: str) -> str:
    """Hash: step key -> id of its latest job; a coordinator taking the run over adopts running ones."""
    return f"{RUN_PREFIX}{run_id}:jobs"


def run_events_key(run_id: str) -> str:
    """List of the run's step events (JSON)."""
    return f"{RUN_PREFIX}{run_id}:events"


def run_reports_key(run_id: str) -> str:
    """Hash: job id -> the report a worker sent for it (written with the RPUSH on the results list).

    Durable where the results list is consumed: a coordinator taking a run over adopts these reports
    instead of running their steps again.
    """
    return f"{RUN_PREFIX}{run_id}:reports"


def reports_key_of(results: str) -> str:
    """The reports hash beside a results list (a worker knows only the list's name from the job)."""
    return results.removesuffix(":results") + ":reports"


def run_done_key(run_id: str) -> str:
    """Pushed once when the run ends, for `RunHandle.wait`."""
    return f"{RUN_PREFIX}{run_id}:done"


RUNS_ACTIVE = "rivers:runs:active"  # set of the ids of runs not yet ended: all a coordinator scans to take runs over


def run_keys(run_id: str) -> list[str]:
    """Every key of a submitted run: they all expire RUN_RETENTION_S after it ends."""
    return [run_key(run_id), run_owner_key(run_id), run_steps_key(run_id), run_attempts_key(run_id),
            run_jobs_key(run_id),
            run_events_key(run_id), run_done_key(run_id), results_key(run_id), run_reports_key(run_id)]
