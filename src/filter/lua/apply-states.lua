--[[
  The change applier's first step (changes.ts, ChangeApplier): writes a batch of changes' exact states into their
  buckets, each only when newer by seq than the stored one, so that replays and concurrent appliers are harmless, and
  sets their bloom bits in the segment beside the bucket (bloom.ts). The second step (apply-commit.lua) checks that
  the versions written to are still the ones the pointers name and publishes the changes; until it has, nobody reads
  these writes as news. In a Redis Cluster the caller sends one bucket group (one hash slot, layout.ts) per call.

  Input:
    per change and version written to (one change may come twice: for the current version and for a build), 2 KEYS:
      its bucket, its bloom segment
    and 12 ARGV: field (key text), value (encoded state), seq, "1" when the bucket must already exist (a complete
      version: a bucket without its sentinel was removed, and writing would leave stray keys behind) or "0" (the
      version being built, whose buckets may not be written yet), then the 8 bloom bit offsets in the segment
  A version's segments exist from before its build is announced until its removal starts (build.ts): nothing is
  written where the segment is missing, so a version being removed gets no stray keys from an applier behind.

  Output:
    the number of states written

  Where an encoded state keeps its base-36 seq is state.ts's SEQ_LUA_PATTERN, and the sentinel's field name
  layout.ts's BUCKET_SENTINEL, filled into their placeholders below when the script is loaded (scripts.ts).
]]
local written = 0
for k = 1, #KEYS / 2 do
  local a = 12 * k - 11
  local bucket = KEYS[2 * k - 1]
  local bloom = KEYS[2 * k]
  if redis.call('EXISTS', bloom) == 1 and (ARGV[a + 3] == '0' or redis.call('HEXISTS', bucket, '{{BUCKET_SENTINEL}}') == 1) then
    local old = redis.call('HGET', bucket, ARGV[a])
    local oldseq = -1
    if old then oldseq = tonumber(string.match(old, '{{SEQ_LUA_PATTERN}}'), 36) end
    if oldseq < tonumber(ARGV[a + 2]) then
      redis.call('HSET', bucket, ARGV[a], ARGV[a + 1])
      written = written + 1
    end
    for b = 4, 11 do redis.call('SETBIT', bloom, ARGV[a + b], 1) end
  end
end
return written
