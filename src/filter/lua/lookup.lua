--[[
  Exact states of a batch of keys of one filter version (view.ts, RedisView; batches of more than one key).

  One round trip and one command per batch, however many keys the bloom let through: measurably cheaper than a
  pipeline of HGETs (ioredis builds a command object and a promise per command; the script is one). Every key's
  bucket sentinel is read with it (one HMGET per key, as the single-key path does): its value is the generation id,
  so a Redis that restarted empty, a version removed or replaced under us, or a bucket gone alone (evicted under
  maxmemory, deleted by hand) is never read as "no record", which for a TACIR recipient would mean "allowed".
  The version's meta is not read: it lives in another hash slot of a Redis Cluster (layout.ts), and the sentinels
  prove all it would. In a cluster the caller sends the keys of one bucket group (one slot) per call.

  Input:
    KEYS[1..n]       the bucket of each field
    ARGV[1]          generation id of the version
    ARGV[2..n+1]     the fields (key texts)

  Output:
    0                a bucket lacks its sentinel (or holds another generation's)
    { values }       the n values, false where absent

  The sentinel's field name is layout.ts's BUCKET_SENTINEL, filled into its placeholder below when the script is
  loaded (scripts.ts).
]]
local gen = ARGV[1]
local out = {}
for i = 1, #KEYS do
  -- The key and its bucket's sentinel in one command, one call per key. An HGET of each plus an HGET of the sentinel
  -- per distinct bucket (about 1,970 calls for 1,000 keys) took the 1,000-recipient batch from 485,000 to 371,000
  -- recipients/s in the benchmark, Redis at 71% of a core; this form measured level with the script before sentinels.
  local r = redis.call('HMGET', KEYS[i], ARGV[i + 1], '{{BUCKET_SENTINEL}}')
  if r[2] ~= gen then return 0 end
  out[i] = r[1]
end
return out
