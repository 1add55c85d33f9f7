"""The pod launcher's Redis scripts: who follows a step's pod, and who may report for it.

A kubernetes job is claimed by a launcher (its lease and `rivers_launcher` name it, its id joins LAUNCHED),
handed over to its pod (the lease becomes "pod:<name>", step_pod.py), and reported by the pod; only what the
pod cannot report (OOMKilled, never started, deleted, killed) is reported by the launcher that follows it.
A launcher whose heartbeat key is gone is dead: another one adopts its jobs (and its lease, if the pod has
not taken it yet), so every job in LAUNCHED always has a live follower or is about to get one.
"""

from __future__ import annotations

from rivers import defaults
from rivers.distributed.worker import claim_script
from rivers.queues import keys, rq_view

# The workers' claim, recording the launcher that follows the job.
CLAIM = claim_script(f"""redis.call('HSET', job, '{keys.JOB_LAUNCHER}', ARGV[1])
    redis.call('SADD', '{keys.LAUNCHED}', id)""")

# Renew the leases this launcher still holds. ARGV: launcher, lease ms, ids... -> per id 1 (renewed) | 0 (its pod
# has taken it over, or it is gone)
RENEW = f"""
local out = {{}}
for i = 3, #ARGV do
  local lease = '{keys.LEASE_PREFIX}' .. ARGV[i]
  if redis.call('GET', lease) == ARGV[1] then
    redis.call('PEXPIRE', lease, ARGV[2])
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
"""

# A followed pod ended. If it reported, push the report it kept (step_pod.py): the run's slot frees only now.
# Else report what the pod could not, fenced: only while the job is still started and this launcher follows it.
# Either way the launcher stops following it. ARGV: launcher, now (RQ time), now (epoch s), queue name, id,
# reply_to, reports key, message ('' = nothing to add), error, error for RQ's result stream.
# -> 1 reported | 0 nothing to report (the pod reported, or the coordinator gave up on it) | -1 not followed here
REPORT = rq_view.LUA_FUNCTIONS + f"""
local id = ARGV[5]
local job = '{keys.RQ_JOB_PREFIX}' .. id
local found = redis.call('HMGET', job, '{keys.JOB_STATUS}', '{keys.JOB_LAUNCHER}', '{keys.JOB_WORKER}')
if found[2] ~= ARGV[1] then
  return -1
end
redis.call('SREM', '{keys.LAUNCHED}', id)
if found[1] ~= '{keys.STARTED}' then
  local kept = redis.call('HGET', ARGV[7], id)
  if kept then
    redis.call('RPUSH', ARGV[6], kept)
    redis.call('EXPIRE', ARGV[6], {defaults.RESULT_TTL_S})
  end
  return 0
end
if ARGV[8] == '' then
  return 0
end
redis.call('RPUSH', ARGV[6], ARGV[8])
redis.call('EXPIRE', ARGV[6], {defaults.RESULT_TTL_S})
redis.call('HSET', ARGV[7], id, ARGV[8])
redis.call('EXPIRE', ARGV[7], {defaults.RESULT_TTL_S})
redis.call('DEL', '{keys.LEASE_PREFIX}' .. id)
rq_failed(ARGV[4], id, found[3] or ARGV[1], ARGV[3], ARGV[2], {defaults.FINISHED_JOB_TTL_S}, ARGV[9], ARGV[10])
return 1
"""

# Hand back jobs whose pods have not taken them over (SIGTERM). ARGV: launcher, queue name, ids... -> handed back
RELEASE = rq_view.LUA_FUNCTIONS + f"""
local out = {{}}
for i = 3, #ARGV do
  local id = ARGV[i]
  local lease = '{keys.LEASE_PREFIX}' .. id
  local job = '{keys.RQ_JOB_PREFIX}' .. id
  if redis.call('GET', lease) == ARGV[1] and redis.call('HGET', job, '{keys.JOB_LAUNCHER}') == ARGV[1] then
    redis.call('DEL', lease)
    redis.call('HDEL', job, '{keys.JOB_LAUNCHER}')
    redis.call('SREM', '{keys.LAUNCHED}', id)
    rq_requeued(ARGV[2], id, ARGV[1])
    redis.call('LPUSH', '{keys.RQ_QUEUE_PREFIX}' .. ARGV[2], id)
    out[#out + 1] = id
  end
end
return out
"""

# Adopt the jobs of dead launchers; forget the ones that ended. ARGV: launcher, lease ms
# -> per adopted job: id, data, signature
ADOPT = f"""
local out = {{}}
for _, id in ipairs(redis.call('SMEMBERS', '{keys.LAUNCHED}')) do
  local job = '{keys.RQ_JOB_PREFIX}' .. id
  local found = redis.call('HMGET', job, '{keys.JOB_STATUS}', '{keys.JOB_LAUNCHER}', '{keys.JOB_DATA}',
                           '{keys.JOB_SIGNATURE}')
  if found[1] ~= '{keys.STARTED}' or not found[2] then
    redis.call('SREM', '{keys.LAUNCHED}', id)
  elseif found[2] ~= ARGV[1] and redis.call('EXISTS', '{keys.WORKER_PREFIX}' .. found[2]) == 0 then
    redis.call('HSET', job, '{keys.JOB_LAUNCHER}', ARGV[1])
    local lease = '{keys.LEASE_PREFIX}' .. id
    local holder = redis.call('GET', lease)
    if not holder or string.sub(holder, 1, {len(keys.POD_LEASE_PREFIX)}) ~= '{keys.POD_LEASE_PREFIX}' then
      redis.call('SET', lease, ARGV[1], 'PX', ARGV[2])
    end
    out[#out + 1] = id
    out[#out + 1] = found[3]
    out[#out + 1] = found[4] or ''
  end
end
return out
"""
