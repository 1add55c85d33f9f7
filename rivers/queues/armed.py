"""Jobs armed on an upstream attempt: enqueued by that attempt's own successful report, in Redis, atomically.

A step whose last missing input is being made by one running attempt has its job built and stored ahead
(ARM_SCRIPT), deferred, on the upstream's `rivers:after:<id>` list. The upstream's REPORT script releases it
(RELEASE_LUA): on a success reported while the run's token is still the arming coordinator's, the job goes on its
queue in the same atomic step as the report, and a worker's blocking pop takes it at once; on any other report it
is deleted. So a step's downstream starts without a round trip through its coordinator, and the coordinator still
decides: it armed the job (nothing runs that it did not build and sign), it is told of the release by the very
report that caused it, and it disarms (DISARM_SCRIPT) what an upstream ending without a report (lost, vanished,
refused) or a run cancelled leaves behind. The hub (redis.py) keeps the Python side.
"""

from __future__ import annotations

from rivers import defaults
from rivers.queues import keys

# release_armed(upstream id, ok, now (RQ time), keep): what was armed on the upstream leaves: queued when `ok` (the
# report is a success) and the run's token has not moved on, unless `keep(id, queue name)` (nil: none) claims it
# for the reporter instead; deleted otherwise. Put before a script's body.
RELEASE_LUA = f"""
local function release_armed(upstream, ok, now_iso, keep)
  local after = '{keys.AFTER_PREFIX}' .. upstream
  for _, id in ipairs(redis.call('LRANGE', after, 0, -1)) do
    local job = '{keys.RQ_JOB_PREFIX}' .. id
    local found = redis.call('HMGET', job, '{keys.JOB_STATUS}', '{keys.JOB_ORIGIN}', '{keys.JOB_RUN}',
                             '{keys.JOB_TOKEN}', '{keys.JOB_STEP}')
    if found[1] == '{keys.DEFERRED}' then
      if ok and (found[4] == '' or redis.call('HGET', found[3], '{keys.RUN_TOKEN}') == found[4]) then
        redis.call('HSET', job, '{keys.JOB_STATUS}', '{keys.QUEUED}', '{keys.JOB_ENQUEUED_AT}', now_iso)
        redis.call('HSET', found[3] .. ':jobs', found[5], id)
        if not (keep and keep(id, found[2])) then
          local queue = '{keys.RQ_QUEUE_PREFIX}' .. found[2]
          redis.call('RPUSH', queue, id)
          redis.call('SADD', '{keys.RQ_QUEUES}', queue)
        end
      else
        redis.call('DEL', job)
      end
    end
  end
  redis.call('DEL', after)
end
"""

# Arm one job on an upstream attempt, only while that attempt is queued or started and unreported (else its report
# could not release it: the coordinator sends it itself). ARGV: upstream id, the run's reports hash, job id, the
# job hash's fields and values (status DEFERRED). -> 1 armed, 0 refused
ARM_SCRIPT = f"""
local upstream, reports, id = ARGV[1], ARGV[2], ARGV[3]
local status = redis.call('HGET', '{keys.RQ_JOB_PREFIX}' .. upstream, '{keys.JOB_STATUS}')
if (status ~= '{keys.QUEUED}' and status ~= '{keys.STARTED}') or redis.call('HEXISTS', reports, upstream) == 1 then
  return 0
end
local job = '{keys.RQ_JOB_PREFIX}' .. id
redis.call('HSET', job, unpack(ARGV, 4))
redis.call('EXPIRE', job, {defaults.RESULT_TTL_S})
local after = '{keys.AFTER_PREFIX}' .. upstream
redis.call('RPUSH', after, id)
redis.call('EXPIRE', after, {defaults.RESULT_TTL_S})
return 1
"""

# Take armed jobs back: off their upstream's list and, unless a worker already claimed one (it runs; its report is
# not waited for), out of their queue and Redis. ARGV: per job: upstream id, job id, queue key
DISARM_SCRIPT = f"""
for i = 1, #ARGV, 3 do
  local upstream, id, queue = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  redis.call('LREM', '{keys.AFTER_PREFIX}' .. upstream, 0, id)
  local job = '{keys.RQ_JOB_PREFIX}' .. id
  local status = redis.call('HGET', job, '{keys.JOB_STATUS}')
  if status == '{keys.DEFERRED}' or status == '{keys.QUEUED}' then
    redis.call('LREM', queue, 0, id)
    redis.call('DEL', job)
  end
end
return 1
"""


def armed_fields(fields: dict[str, str | bytes], upstream: str, run_key: str, token: str,
                 step_key: str) -> dict[str, str | bytes]:
    """A job's hash fields (fields_of) as an armed job's: deferred, with what its release needs."""
    return {**fields, keys.JOB_STATUS: keys.DEFERRED, keys.JOB_AFTER: upstream, keys.JOB_RUN: run_key,
            keys.JOB_TOKEN: token, keys.JOB_STEP: step_key}
