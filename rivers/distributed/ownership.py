"""Run ownership, fenced: a lease names the coordinator that owns a run, and a token counts takeovers.

    take      SET rivers:run:<id>:owner <me> NX PX LEASE_MS; HINCRBY rivers:run:<id> token 1 -> my token
    renew     PEXPIRE the owner key while it names me; retake it if it lapsed and nobody took the run
              (the token is still mine); else the run is lost: stand down
    write     every write a coordinator makes for a run checks, in the same script, that the run's token is
              still the one it took the run with: a coordinator paused past its lease (GC, frozen VM,
              SIGSTOP) finds itself fenced out the moment it writes, and stops driving the run

Steps a stale owner dispatched before it was fenced are ordinary attempts with their own leases: the new
owner adopts them (their reports are kept per run), so their results are never lost nor run twice.
"""

from __future__ import annotations

import time
from typing import Any

from rivers import defaults
from rivers.queues import keys

# KEYS: owner key, run key. ARGV: coordinator name, lease ms, now. -> the new token, or nil if another owns the run.
TAKE_SCRIPT = f"""
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return nil
end
local token = redis.call('HINCRBY', KEYS[2], '{keys.RUN_TOKEN}', 1)
redis.call('HSET', KEYS[2], 'owner', ARGV[1], 'status', 'running', 'updated_at', ARGV[3])
return token
"""

# ARGV: coordinator name, lease ms, then pairs (run id, token). -> the run ids this coordinator no longer owns.
RENEW_SCRIPT = f"""
local lost = {{}}
for i = 3, #ARGV, 2 do
  local run, token = ARGV[i], ARGV[i + 1]
  local owner_key = '{keys.RUN_PREFIX}' .. run .. ':owner'
  local owner = redis.call('GET', owner_key)
  if owner == ARGV[1] then
    redis.call('PEXPIRE', owner_key, ARGV[2])
  elseif not owner and redis.call('HGET', '{keys.RUN_PREFIX}' .. run, '{keys.RUN_TOKEN}') == token then
    redis.call('SET', owner_key, ARGV[1], 'PX', ARGV[2])
  else
    lost[#lost + 1] = run
  end
end
return lost
"""

# Lua that a fenced write starts with: ARGV[1] is the writer's token, KEYS[1] the run's hash.
FENCE_LUA = f"""
if redis.call('HGET', KEYS[1], '{keys.RUN_TOKEN}') ~= ARGV[1] then
  return 0
end
"""

# A step event and, for a final result, the result. KEYS: run, steps hash, events list.
# ARGV: token, event JSON, step key, StepResult JSON or ''. -> 1, or 0 when fenced out.
RECORD_SCRIPT = FENCE_LUA + """
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
end
redis.call('RPUSH', KEYS[3], ARGV[2])
return 1
"""


class Ownership:
    """The fenced ownership of the runs one coordinator process drives."""

    def __init__(self, client: Any, name: str) -> None:
        self.client = client
        self.name = name
        self._take = client.register_script(TAKE_SCRIPT)
        self._renew = client.register_script(RENEW_SCRIPT)
        self._record = client.register_script(RECORD_SCRIPT)

    def take(self, run_id: str) -> int | None:
        """The token of a run this coordinator now owns, or None when another coordinator owns it."""
        token = self._take(keys=[keys.run_owner_key(run_id), keys.run_key(run_id)],
                           args=[self.name, defaults.LEASE_MS, time.time()])
        return int(token) if token is not None else None

    def renew(self, tokens: dict[str, int]) -> list[str]:
        """Renew the leases of the runs held with these tokens; the ones lost to another coordinator."""
        args: list[Any] = [self.name, defaults.LEASE_MS]
        for run_id, token in tokens.items():
            args += [run_id, token]
        return [run.decode() for run in self._renew(args=args)]

    def record(self, run_id: str, token: int, event_json: str, step_key: str, result_json: str) -> bool:
        """Append a step event (and store a final result); False when fenced out."""
        return bool(self._record(keys=[keys.run_key(run_id), keys.run_steps_key(run_id), keys.run_events_key(run_id)],
                                 args=[token, event_json, step_key, result_json]))

    def holds(self, pipe: Any, run_id: str, token: int) -> bool:
        """Within `client.transaction` (the run's hash WATCHed): whether the run's token is still ours."""
        current = pipe.hget(keys.run_key(run_id), keys.RUN_TOKEN)
        return current is not None and int(current) == token
