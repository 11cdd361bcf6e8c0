--[[
  Exact states of a batch of keys of one filter version (view.ts, RedisView; batches of more than one key).

  One round trip and one command per batch, however many keys the bloom let through: measurably cheaper than a
  pipeline of HGETs (ioredis builds a command object and a promise per command; the script is one). It also asks
  whether the version is still the one the view serves (its generation id, not only its number, which repeats
  after Redis lost its data), so that a Redis that restarted empty, or a version removed or replaced under us, is
  never read as "no record", which for a TACIR recipient would mean "allowed".
  Every distinct bucket's sentinel field is checked too, as the single-key HMGET does: the meta can be intact while a
  bucket is gone (evicted under maxmemory, deleted by hand), and a missing bucket must never read as "no record".
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
local checked = {}
local out = {}
for i = 2, #ARGV do
  local bucket = KEYS[i]
  if not checked[bucket] then
    local s = redis.call('HGET', bucket, '{{BUCKET_SENTINEL}}')
    if not s or (gen ~= '' and s ~= gen) then return 0 end
    checked[bucket] = true
  end
  out[i - 1] = redis.call('HGET', bucket, ARGV[i])
end
return out
