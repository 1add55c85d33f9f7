"""What rivers must write to Redis so that RQ 3.0's own tools see its workers and step jobs.

rivers runs its own worker loop, so `rq info`, rq-dashboard and `rq.Worker.all()` only see what is written here
in RQ's formats. Everything below was read off RQ 3.0.0 (worker/base.py, worker_registration.py, registry.py,
executions.py, job.py, results.py) and is checked through RQ's Python API by tests/unit/test_rq_view.py. Keys use
RQ's default prefix `rq` (RQ_KEY_PREFIX must stay unset). `<q>` is the queue name (`rivers:parallel`), `<w>` the
worker name, `<exec>` = `execution_id(<w>)` (the worker name, `:` -> `_`), `<member>` = `<job>:<exec>`.

Timestamps: job and worker hash fields are UTC `%Y-%m-%dT%H:%M:%S.%fZ` (`rq_time`); execution hash fields and
result stream `execution_*_at` are float epoch seconds; registry scores are epoch seconds (an expiry time).

Worker (Python, a redis-py pipeline: `register_worker`, `heartbeat_worker`, `unregister_worker`)
    HSET rq:worker:<w> birth last_heartbeat queues(<q>,<q2>) pid hostname ip_address python_version state
    EXPIRE rq:worker:<w> <ttl>              (RQ: worker_ttl + 60 = 480 s; a hash gone = a dead worker)
    SADD rq:workers rq:worker:<w>;  SADD rq:workers:<q> rq:worker:<w>      (members are KEYS, not names)
    beat: HSET last_heartbeat state(idle|busy); EXPIRE rq:worker:<w> and rq:worker:<w>:executions <ttl>
    stop: SREM both sets; DEL rq:worker:<w> rq:worker:<w>:executions
    `Worker.all()` drops (and SREMs from rq:workers) members whose hash is gone; `Worker.count(queue=)` counts
    rq:workers:<q> members as they are until a cleanup (`rq info`, an RQ worker) SREMs the dead ones.

Job, claim -> started (Lua `rq_started`, inside the claim script, once the job hash is known to exist)
    HSET rq:job:<job> status started worker_name <w> started_at <iso> last_heartbeat <iso>
    HSET rq:execution:<member> id <exec> job_id <job> created_at <now> last_heartbeat <now> worker_name <w>
    EXPIRE rq:execution:<member> <ttl + 60>
    ZADD rq:wip:<q> <floor(now) + ttl> <member>                         -> StartedJobRegistry
    ZADD rq:executions:<job> <floor(now) + ttl + 60> <exec>; EXPIRE it <ttl + 60>   -> job.get_executions()
    optional (`current` = '1'): SADD rq:worker:<w>:executions <member>; EXPIRE it <ttl + 60>
                                                      -> worker.get_current_job_id(); breaks rq-dashboard, see below
    HSET rq:worker:<w> state busy                                     (only if the worker hash exists)
Running (Python `heartbeat_jobs` with the worker heartbeat, or Lua `rq_heartbeat`), every beat:
    ZADD rq:wip:<q> XX <floor(now) + ttl> <member>; EXPIRE rq:execution:<member> <ttl + 60>;
    ZADD rq:executions:<job> XX <floor(now) + ttl + 60> <exec>; EXPIRE rq:executions:<job> <ttl + 60>
Success -> finished (Lua `rq_finished`), failure -> failed (Lua `rq_failed`); both first end the execution:
    DEL rq:execution:<member>; ZREM rq:wip:<q> <member>; ZREM rq:executions:<job> <exec>;
    SREM rq:worker:<w>:executions <member> (HSET rq:worker:<w> state idle if that emptied it); worker hash (if it
    exists): HINCRBY successful_job_count|failed_job_count 1, HINCRBYFLOAT total_working_time <now - created_at>.
    Untracked executions leave `state` to the next `heartbeat_worker` (busy while the worker holds a job).
    Then, only if rq:job:<job> still exists (a late report of a deleted job writes nothing more), keep != 0:
    HSET rq:job:<job> status finished|failed ended_at <iso> [exc_info <plain text>: failed only]
    EXPIRE rq:job:<job> <keep>                                        (keep < 0: PERSIST, score +inf)
    ZADD rq:finished:<q> | rq:failed:<q> <floor(now) + keep> <job>   (member: the bare job id)
    XADD rq:results:<job> MAXLEN ~ 10 * type 1|2 worker_name <w> execution_id <exec> execution_started_at
         <created_at> execution_ended_at <now> [exc_string <base64(zlib(text))>: `exc_string_field`];
    EXPIRE rq:results:<job> <keep>                                   -> job.latest_result(), dashboard exc_info
    keep == 0 (RQ's result_ttl=0): DEL rq:job:<job> rq:results:<job>, no registry entry (what rivers did so far).
    RQ's defaults: keep 500 s on success (DEFAULT_RESULT_TTL), 1 year on failure (DEFAULT_FAILURE_TTL).
Handed back (Lua `rq_requeued`): end the execution; HSET rq:job:<job> status queued worker_name '' started_at '';
    the caller LPUSHes the id back as before.  Lost (coordinator gives up, Lua `rq_forget`): end the execution of
    the job hash's worker_name, then DEL rq:job:<job> rq:results:<job>.

Pitfalls
- `StartedJobRegistry.cleanup()` runs in `get_job_ids()`, `len()`/`count`, `rq info` and every RQ worker's
  maintenance: each member whose score <= now is dropped, and if its job hash still says `status started` the job
  is FAILED (AbandonedJobError): hash rewritten by `job.save()` with status failed, EXPIRE 1 year, ZADD rq:failed,
  a failure result. So renew the wip score with every lease renewal, and keep `ttl` well above the lease plus the
  coordinator's detection time (RQ uses 90 s = job_monitoring_interval + 60). A member whose job hash is gone
  (the coordinator deleted it) or not `started` is only dropped.
- Keeping finished/failed job hashes breaks rivers' rule "rq:job:<job> exists => queued or running" (coordinator
  watcher `_check`, `adopt`): they must also look at `status`, or use keep == 0.
- rq-dashboard 0.9.0 (with or without --json) answers 500 on /data/workers.json while a worker's executions set
  names a JSON-serialized job: it hydrates workers without a serializer and `get_current_job().get_call_string()`
  unpickles the job data (a real RQ worker running JSON jobs hits the same). Hence `current` defaults to off.
- Job ids and execution ids must not contain `:` (registry members are split on it); rivers' ids are uuid hex.
- The scripts touch keys computed in Lua, not passed in KEYS: fine on one Redis, not on Redis Cluster.
"""

from __future__ import annotations

import base64
import sys
import zlib
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

RQ_PREFIX = "rq"  # rq.defaults.RQ_KEY_PREFIX when the RQ_KEY_PREFIX environment variable is unset
WORKERS_KEY = f"{RQ_PREFIX}:workers"  # set of the keys of every worker
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # rq.utils.utcformat / utcparse


def worker_key(name: str) -> str:
    """Hash of one worker; also the member that stands for it in the worker sets."""
    return f"{RQ_PREFIX}:worker:{name}"


def queue_workers_key(queue_name: str) -> str:
    """Set of the keys of the workers of one queue."""
    return f"{RQ_PREFIX}:workers:{queue_name}"


def worker_executions_key(name: str) -> str:
    """Set of the `<job>:<exec>` members a worker is running (worker.get_current_job_id())."""
    return f"{worker_key(name)}:executions"


def started_key(queue_name: str) -> str:
    """StartedJobRegistry: members `started_member(...)`, score = expiry epoch seconds."""
    return f"{RQ_PREFIX}:wip:{queue_name}"


def finished_key(queue_name: str) -> str:
    """FinishedJobRegistry: members bare job ids, score = expiry epoch seconds (or +inf)."""
    return f"{RQ_PREFIX}:finished:{queue_name}"


def failed_key(queue_name: str) -> str:
    """FailedJobRegistry: members bare job ids, score = expiry epoch seconds (or +inf)."""
    return f"{RQ_PREFIX}:failed:{queue_name}"


def execution_id(worker_name: str) -> str:
    """The execution id of a job claimed by `worker_name`: a worker runs a job id at most once."""
    return worker_name.replace(":", "_")


def started_member(job_id: str, worker_name: str) -> str:
    """Member of a job in the StartedJobRegistry: `<job_id>:<execution_id>`."""
    return f"{job_id}:{execution_id(worker_name)}"


def finished_member(job_id: str) -> str:
    """Member of a job in the FinishedJobRegistry: the job id."""
    return job_id


def failed_member(job_id: str) -> str:
    """Member of a job in the FailedJobRegistry: the job id."""
    return job_id


def execution_key(job_id: str, worker_name: str) -> str:
    """Hash of one execution: id, job_id, created_at, last_heartbeat (epoch floats), worker_name."""
    return f"{RQ_PREFIX}:execution:{started_member(job_id, worker_name)}"


def job_executions_key(job_id: str) -> str:
    """Sorted set of a job's execution ids (job.get_executions()), score = expiry + 60 s."""
    return f"{RQ_PREFIX}:executions:{job_id}"


def result_key(job_id: str) -> str:
    """Stream of a job's results (job.latest_result())."""
    return f"{RQ_PREFIX}:results:{job_id}"


def rq_time(moment: datetime | None = None) -> str:
    """A timestamp as RQ writes it in job and worker hashes (UTC, microseconds, `Z`)."""
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime(TIME_FORMAT)


def exc_string_field(text: str) -> str:
    """`exc_string` of a failure result: base64 of zlib of the UTF-8 text (Lua cannot compress)."""
    return base64.b64encode(zlib.compress(text.encode())).decode()


def register_worker(pipe: Any, name: str, queue_names: list[str], *, hostname: str, pid: int, ttl_s: int,
                    state: str = "idle", birth: datetime | None = None, ip_address: str = "unknown") -> None:
    """Add the commands that make a worker appear in `Worker.all()` and `Worker.all(queue=...)`.

    Idempotent (no DEL: the job counters survive): calling it on every beat, with the same `birth`, also recreates
    a worker hash that expired during a Redis outage, which `heartbeat_worker` alone would leave partial.
    """
    now = datetime.now(UTC)
    key = worker_key(name)
    pipe.hset(key, mapping={
        "birth": rq_time(birth or now), "last_heartbeat": rq_time(now), "queues": ",".join(queue_names),
        "pid": pid, "hostname": hostname, "ip_address": ip_address, "python_version": sys.version, "state": state,
    })
    pipe.expire(key, ttl_s)
    pipe.sadd(WORKERS_KEY, key)
    for queue_name in queue_names:
        pipe.sadd(queue_workers_key(queue_name), key)


def heartbeat_worker(pipe: Any, name: str, *, ttl_s: int, state: str, current_job: str | None = None) -> None:
    """Add the commands of a worker heartbeat: last_heartbeat, state (`idle`/`busy`), TTLs.

    `current_job` goes to the informational `current_job` field, which RQ 3 does not read: it takes a worker's
    current job from the executions set that `rq_started(..., current='1')` writes.
    """
    key = worker_key(name)
    pipe.hset(key, mapping={"last_heartbeat": rq_time(), "state": state})
    if current_job:
        pipe.hset(key, "current_job", current_job)
    else:
        pipe.hdel(key, "current_job")
    pipe.expire(key, ttl_s)
    pipe.expire(worker_executions_key(name), ttl_s)


def heartbeat_jobs(pipe: Any, queue_name: str, worker_name: str, job_ids: Iterable[str], *, ttl_s: int) -> None:
    """Push back the started-registry expiry of jobs the worker still runs (never re-adds a finished one)."""
    now = int(datetime.now(UTC).timestamp())
    for job_id in job_ids:
        pipe.zadd(started_key(queue_name), {started_member(job_id, worker_name): now + ttl_s}, xx=True)
        pipe.expire(execution_key(job_id, worker_name), ttl_s + 60)
        pipe.zadd(job_executions_key(job_id), {execution_id(worker_name): now + ttl_s + 60}, xx=True)
        pipe.expire(job_executions_key(job_id), ttl_s + 60)


def unregister_worker(pipe: Any, name: str, queue_names: list[str]) -> None:
    """Add the commands that remove a worker from RQ's view at once."""
    key = worker_key(name)
    pipe.srem(WORKERS_KEY, key)
    for queue_name in queue_names:
        pipe.srem(queue_workers_key(queue_name), key)
    pipe.delete(key, worker_executions_key(name))


# Lua functions to put at the top of a script (`LUA_FUNCTIONS + body`); the body calls them. Arguments are strings
# as they come from ARGV: queue name, job id, worker name, now = epoch seconds (float), now_iso = rq_time(now),
# ttl / keep = seconds. They return 1 when they wrote the job hash, 0 when it was gone (rq_forget: keys deleted).
#   rq_started(queue, job_id, worker, now, now_iso, ttl[, current])   claim, once the job hash is known to exist;
#       current '1': also SADD the worker's executions set (see the rq-dashboard pitfall in the module docstring)
#   rq_heartbeat(queue, job_id, worker, now, ttl)                 renew the started-registry expiry
#   rq_finished(queue, job_id, worker, now, now_iso, keep)        success
#   rq_failed(queue, job_id, worker, now, now_iso, keep, exc_info, exc_string)   exc_string: exc_string_field() or ''
#   rq_requeued(queue, job_id, worker)                            handed back: status queued, caller re-pushes it
#   rq_forget(queue, job_id)                                      lost: end its execution, delete the job
#   rq_iso(seconds, micros)                                       an epoch time as rq_time() writes it
#   rq_clock()                                                    Redis's TIME: (epoch seconds, rq_iso of it)
LUA_FUNCTIONS = """
local function rq_iso(seconds, micros)
  local days = math.floor(seconds / 86400)
  local rest = seconds - days * 86400
  local z = days + 719468  -- the civil date of a day number (proleptic Gregorian, eras of 400 years)
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local day = doy - math.floor((153 * mp + 2) / 5) + 1
  local month = mp < 10 and mp + 3 or mp - 9
  local year = yoe + era * 400 + (month <= 2 and 1 or 0)
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%06dZ', year, month, day, math.floor(rest / 3600),
                       math.floor(rest % 3600 / 60), rest % 60, micros)
end

local function rq_clock()
  local time = redis.call('TIME')
  local seconds, micros = tonumber(time[1]), tonumber(time[2])
  return string.format('%d.%06d', seconds, micros), rq_iso(seconds, micros)
end

local function rq_exec_id(worker)
  return (string.gsub(worker, ':', '_'))
end

local function rq_started(queue, job_id, worker, now, now_iso, ttl, current)
  now = tonumber(now)
  ttl = tonumber(ttl)
  local exec_id = rq_exec_id(worker)
  local member = job_id .. ':' .. exec_id
  local exec_key = 'rq:execution:' .. member
  local wkey = 'rq:worker:' .. worker
  redis.call('HSET', 'rq:job:' .. job_id, 'status', 'started', 'worker_name', worker, 'started_at', now_iso,
             'last_heartbeat', now_iso)
  redis.call('HSET', exec_key, 'id', exec_id, 'job_id', job_id, 'created_at', now, 'last_heartbeat', now,
             'worker_name', worker)
  redis.call('EXPIRE', exec_key, ttl + 60)
  redis.call('ZADD', 'rq:executions:' .. job_id, math.floor(now) + ttl + 60, exec_id)
  redis.call('EXPIRE', 'rq:executions:' .. job_id, ttl + 60)
  redis.call('ZADD', 'rq:wip:' .. queue, math.floor(now) + ttl, member)
  if current == '1' then
    redis.call('SADD', wkey .. ':executions', member)
    redis.call('EXPIRE', wkey .. ':executions', ttl + 60)
  end
  if redis.call('EXISTS', wkey) == 1 then
    redis.call('HSET', wkey, 'state', 'busy')
  end
  return 1
end

local function rq_heartbeat(queue, job_id, worker, now, ttl)
  now = math.floor(tonumber(now))
  ttl = tonumber(ttl)
  local exec_id = rq_exec_id(worker)
  local member = job_id .. ':' .. exec_id
  redis.call('ZADD', 'rq:wip:' .. queue, 'XX', now + ttl, member)
  if redis.call('EXPIRE', 'rq:execution:' .. member, ttl + 60) == 1 then
    redis.call('HSET', 'rq:execution:' .. member, 'last_heartbeat', now)
  end
  redis.call('ZADD', 'rq:executions:' .. job_id, 'XX', now + ttl + 60, exec_id)
  redis.call('EXPIRE', 'rq:executions:' .. job_id, ttl + 60)
  return 1
end

local function rq_end_execution(queue, job_id, worker)
  local exec_id = rq_exec_id(worker)
  local member = job_id .. ':' .. exec_id
  local exec_key = 'rq:execution:' .. member
  local wkey = 'rq:worker:' .. worker
  local created = redis.call('HGET', exec_key, 'created_at')
  redis.call('DEL', exec_key)
  redis.call('ZREM', 'rq:wip:' .. queue, member)
  redis.call('ZREM', 'rq:executions:' .. job_id, exec_id)
  local tracked = redis.call('SREM', wkey .. ':executions', member) == 1
  if tracked and redis.call('EXISTS', wkey) == 1 and redis.call('SCARD', wkey .. ':executions') == 0 then
    redis.call('HSET', wkey, 'state', 'idle')
  end
  return created
end

local function rq_ended(status, queue, job_id, worker, now, now_iso, keep, exc_info, exc_string)
  now = tonumber(now)
  keep = tonumber(keep)
  local failed = status == 'failed'
  local created = rq_end_execution(queue, job_id, worker)
  local wkey = 'rq:worker:' .. worker
  if redis.call('EXISTS', wkey) == 1 then
    redis.call('HINCRBY', wkey, failed and 'failed_job_count' or 'successful_job_count', 1)
    if created then
      redis.call('HINCRBYFLOAT', wkey, 'total_working_time', math.max(0, now - tonumber(created)))
    end
  end
  local job = 'rq:job:' .. job_id
  local results = 'rq:results:' .. job_id
  if redis.call('EXISTS', job) == 0 then
    return 0
  end
  if keep == 0 then
    redis.call('DEL', job, results)
    return 1
  end
  redis.call('HSET', job, 'status', status, 'ended_at', now_iso)
  if failed and exc_info and exc_info ~= '' then
    redis.call('HSET', job, 'exc_info', exc_info)
  end
  local result = {'type', failed and 2 or 1, 'worker_name', worker, 'execution_id', rq_exec_id(worker),
                  'execution_ended_at', now}
  if created then
    result[#result + 1] = 'execution_started_at'
    result[#result + 1] = created
  end
  if failed and exc_string and exc_string ~= '' then
    result[#result + 1] = 'exc_string'
    result[#result + 1] = exc_string
  end
  redis.call('XADD', results, 'MAXLEN', '~', 10, '*', unpack(result))
  local score = '+inf'
  if keep > 0 then
    score = math.floor(now) + keep
    redis.call('EXPIRE', job, keep)
    redis.call('EXPIRE', results, keep)
  else
    redis.call('PERSIST', job)
    redis.call('PERSIST', results)
  end
  redis.call('ZADD', (failed and 'rq:failed:' or 'rq:finished:') .. queue, score, job_id)
  return 1
end

local function rq_finished(queue, job_id, worker, now, now_iso, keep)
  return rq_ended('finished', queue, job_id, worker, now, now_iso, keep, '', '')
end

local function rq_failed(queue, job_id, worker, now, now_iso, keep, exc_info, exc_string)
  return rq_ended('failed', queue, job_id, worker, now, now_iso, keep, exc_info, exc_string)
end

local function rq_requeued(queue, job_id, worker)
  rq_end_execution(queue, job_id, worker)
  if redis.call('EXISTS', 'rq:job:' .. job_id) == 0 then
    return 0
  end
  redis.call('HSET', 'rq:job:' .. job_id, 'status', 'queued', 'worker_name', '', 'started_at', '')
  return 1
end

local function rq_forget(queue, job_id)
  local worker = redis.call('HGET', 'rq:job:' .. job_id, 'worker_name')
  if worker and worker ~= '' then
    rq_end_execution(queue, job_id, worker)
  end
  return redis.call('DEL', 'rq:job:' .. job_id, 'rq:results:' .. job_id)
end
"""

__all__ = [
    "LUA_FUNCTIONS",
    "RQ_PREFIX",
    "TIME_FORMAT",
    "WORKERS_KEY",
    "exc_string_field",
    "execution_id",
    "execution_key",
    "failed_key",
    "failed_member",
    "finished_key",
    "finished_member",
    "heartbeat_jobs",
    "heartbeat_worker",
    "job_executions_key",
    "queue_workers_key",
    "register_worker",
    "result_key",
    "rq_time",
    "started_key",
    "started_member",
    "unregister_worker",
    "worker_executions_key",
    "worker_key",
]
