"""The queue's Lua scripts: each one is atomic, so a crash between its steps cannot happen."""

_PUSH = """
local st = redis.call('HGET', KEYS[2], 'status')
if st then return {'duplicate', st, redis.call('HGET', KEYS[2], 'n_samples') or '0'} end
local n = tonumber(ARGV[8])
local q = tonumber(redis.call('GET', KEYS[3]) or '0')
if q > 0 and q + n > tonumber(ARGV[4]) then return {'full', 'rollouts', tostring(q)} end
-- The team's trainer may lower its scored counters (its ack needs DECRBY), so the scored
-- bounds also hold on the stream itself: each entry holds at least one sample, and its
-- memory is what the server all teams share really holds.
local s = math.max(tonumber(redis.call('GET', KEYS[4]) or '0'), redis.call('XLEN', KEYS[7]))
if s >= tonumber(ARGV[5]) then return {'full', 'scored', tostring(s)} end
-- the same two bounds in bytes (one batch alone is never refused forever)
local b = #ARGV[3]
local qb = tonumber(redis.call('GET', KEYS[5]) or '0')
if qb > 0 and qb + b > tonumber(ARGV[9]) then return {'full', 'rollouts_bytes', tostring(qb)} end
local sb = tonumber(redis.call('GET', KEYS[6]) or '0')
sb = math.max(sb, redis.call('MEMORY', 'USAGE', KEYS[7], 'SAMPLES', '0') or 0)
if sb >= tonumber(ARGV[10]) then return {'full', 'scored_bytes', tostring(sb)} end
local id = redis.call('XADD', KEYS[1], '*', 'batch_id', ARGV[1], 'sample_ids', ARGV[2],
                      'batch', ARGV[3])
redis.call('HSET', KEYS[2], 'status', 'queued', 'n_samples', ARGV[8], 'attempts', 0,
           'created_at', ARGV[6], 'updated_at', ARGV[6], 'rollout_entry', id, 'n_bytes', b)
redis.call('EXPIRE', KEYS[2], ARGV[7])
redis.call('INCRBY', KEYS[3], n)
redis.call('INCRBY', KEYS[5], b)
return {'ok', id}
"""

# A batch already scored or dead-lettered (a duplicate delivery) is only acknowledged.
_BEGIN = """
local st = redis.call('HGET', KEYS[2], 'status')
if st == 'scored' or st == 'dead_lettered' then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  return -1
end
local n = redis.call('HINCRBY', KEYS[2], 'attempts', 1)
redis.call('HSET', KEYS[2], 'status', 'scoring', 'updated_at', ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return n
"""

_COMPLETE = """
local st = redis.call('HGET', KEYS[3], 'status')
if st == 'scored' or st == 'dead_lettered' then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  return false
end
local id = redis.call('XADD', KEYS[2], '*', 'batch_id', ARGV[3], 'sample_ids', ARGV[4],
                      'batch', ARGV[5])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[3], 'status', 'scored', 'updated_at', ARGV[6], 'scored_entry', id)
redis.call('HDEL', KEYS[3], 'reason')  -- an earlier attempt's error is stale now
redis.call('EXPIRE', KEYS[3], ARGV[7])
local n = tonumber(redis.call('HGET', KEYS[3], 'n_samples') or '0')
if redis.call('DECRBY', KEYS[4], n) < 0 then redis.call('SET', KEYS[4], 0) end
redis.call('INCRBY', KEYS[5], n)
local b = tonumber(redis.call('HGET', KEYS[3], 'n_bytes') or '0')
if redis.call('DECRBY', KEYS[6], b) < 0 then redis.call('SET', KEYS[6], 0) end
redis.call('HSET', KEYS[3], 'scored_bytes', #ARGV[5])
redis.call('INCRBY', KEYS[7], #ARGV[5])
return id
"""

_DEAD = """
local st = redis.call('HGET', KEYS[3], 'status')
if st == 'scored' or st == 'dead_lettered' then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  return false
end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[10], '*', 'batch_id', ARGV[3],
                      'sample_ids', ARGV[4], 'reason', ARGV[6], 'attempts', ARGV[7],
                      'batch', ARGV[5])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[3], 'status', 'dead_lettered', 'reason', ARGV[6], 'updated_at', ARGV[8])
redis.call('EXPIRE', KEYS[3], ARGV[9])
local n = tonumber(redis.call('HGET', KEYS[3], 'n_samples') or '0')
if redis.call('DECRBY', KEYS[4], n) < 0 then redis.call('SET', KEYS[4], 0) end
local b = tonumber(redis.call('HGET', KEYS[3], 'n_bytes') or '0')
if redis.call('DECRBY', KEYS[5], b) < 0 then redis.call('SET', KEYS[5], 0) end
return id
"""

# A failed attempt that will be retried: back to 'queued' with the error; a transient failure
# (dependency down) gives its attempt back so an outage does not dead-letter healthy batches.
_RETRY = """
local st = redis.call('HGET', KEYS[1], 'status')
if st ~= 'scoring' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'queued', 'reason', ARGV[1], 'updated_at', ARGV[2])
if ARGV[3] == '1' then redis.call('HINCRBY', KEYS[1], 'attempts', -1) end
return 1
"""

# The trainer's acknowledgement: the first group to acknowledge a batch frees its samples from
# the team's scored bound (HSETNX makes a repeated ack free nothing twice).
_ACK = """
for i = 4, #KEYS do
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[i - 1])
  redis.call('HSET', KEYS[i], 'acked_by:' .. ARGV[1], ARGV[2])
  if redis.call('HSETNX', KEYS[i], 'consumed', ARGV[2]) == 1 then
    local n = tonumber(redis.call('HGET', KEYS[i], 'n_samples') or '0')
    if redis.call('DECRBY', KEYS[2], n) < 0 then redis.call('SET', KEYS[2], 0) end
    local b = tonumber(redis.call('HGET', KEYS[i], 'scored_bytes') or '0')
    if redis.call('DECRBY', KEYS[3], b) < 0 then redis.call('SET', KEYS[3], 0) end
  end
end
return #KEYS - 3
"""

# Trim below the oldest entry some group still needs: per group, its oldest pending entry, or
# the successor of its last-delivered id when nothing is pending. No group: nothing consumed.
_TRIM = """
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
if not ok or #groups == 0 then return 0 end
local best_ms, best_seq = nil, nil
for _, g in ipairs(groups) do
  local name, last
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] end
    if g[i] == 'last-delivered-id' then last = g[i + 1] end
  end
  local p = redis.call('XPENDING', KEYS[1], name)
  local ms, seq
  if tonumber(p[1]) > 0 then
    ms, seq = string.match(p[2], '(%d+)-(%d+)')
    ms, seq = tonumber(ms), tonumber(seq)
  else
    ms, seq = string.match(last, '(%d+)-(%d+)')
    ms, seq = tonumber(ms), tonumber(seq) + 1
  end
  if best_ms == nil or ms < best_ms or (ms == best_ms and seq < best_seq) then
    best_ms, best_seq = ms, seq
  end
end
return redis.call('XTRIM', KEYS[1], 'MINID', string.format('%.0f-%.0f', best_ms, best_seq))
"""

# A worker's heartbeat on a batch it is scoring: reset the entry's idle time (XCLAIM JUSTID
# does not count a delivery) so no other worker claims it, but only while this consumer still
# owns it. Returns 0 when the entry is gone or owned by another consumer.
_EXTEND = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 or p[1][2] ~= ARGV[3] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
return 1
"""
