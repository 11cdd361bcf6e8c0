--[[
  Exact states of a batch of keys of one filter version (view.ts, RedisView; batches of more than one key).

  One round trip and one command per batch, however many keys the bloom let through: measurably cheaper than a
  pipeline of HGETs (ioredis builds a command object and a promise per command; the script is one). It also asks
  whether the version is still the one the view serves (its generation id, not only its number, which repeats
  after Redis lost its data), so that a Redis that restarted empty, or a version removed or replaced under us, is
  never read as "no record", which for a TACIR recipient would mean "allowed".
  Every key's bucket sentinel is read with it (one HMGET per key, as the single-key path does): the meta can be intact
  while a bucket is gone (evicted under maxmemory, deleted by hand), and a missing bucket must never read as "no record".
  (Redis Cluster will need the keys grouped by slot: see the README's scale-out notes.)

  Input:
    KEYS[1]          meta of the version
    KEYS[2..n+1]     the bucket of each field
    ARGV[1]          generation id ("" for a version built before generation ids: then existence is all we check)
    ARGV[2..n+1]     the fields (key texts)

  Output:
    false            the version is gone or is another generation
    0                a bucket lacks its sentinel (or holds another generation's)
    { values }       the n values, false where absent

  The sentinel's field name is layout.ts's BUCKET_SENTINEL, filled into its placeholder below when the script is
  loaded (scripts.ts).
]]
local gen = ARGV[1]
if gen == '' then
  if redis.call('EXISTS', KEYS[1]) == 0 then return false end
elseif redis.call('HGET', KEYS[1], 'gen') ~= gen then return false end
local out = {}
for i = 2, #ARGV do
  -- The key and its bucket's sentinel in one command, one call per key. An HGET of each plus an HGET of the sentinel
  -- per distinct bucket (about 1,970 calls for 1,000 keys) took the 1,000-recipient batch from 485,000 to 371,000
  -- recipients/s in the benchmark, Redis at 71% of a core; this form measured level with the script before sentinels.
  local r = redis.call('HMGET', KEYS[i], ARGV[i], '{{BUCKET_SENTINEL}}')
  local s = r[2]
  if not s or (gen ~= '' and s ~= gen) then return 0 end
  out[i - 1] = r[1]
end
return out
