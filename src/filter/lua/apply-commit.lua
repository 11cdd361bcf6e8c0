--[[
  The change applier's second step (changes.ts, ChangeApplier), after apply-states.lua wrote the states and bloom
  bits: proves that the versions written to are still those the pointers name, then adds one change-stream entry per
  change (key, seq and state: gateways' replicas apply it by the same newer-seq rule; mirror.ts) and raises the applied
  watermark. All its keys share the control hash slot (layout.ts), so this step is atomic in a Redis Cluster too. The
  bits were set before the stream entries: a gateway that downloads the bloom after an entry was added finds its bits.

  Input:
    KEYS[1]  current pointer
    KEYS[2]  building pointer
    KEYS[3]  applied watermark
    KEYS[4]  change stream
    then the meta of each version written to (the current one first, then the one being built; only those that exist)
    ARGV[1]  current version the caller computed for, or "0"
    ARGV[2]  building claim ("N|generation", build.ts) the caller computed for, or "0"
    ARGV[3]  number of changes
    ARGV[4]  stream max length
    ARGV[5], ARGV[6]  the generation ids the caller took the geometry of those versions from ("" for none)
    then per change: seq, field, value

  Output:
    the number of changes published;
    -1  the pointers moved, or a version is another generation than the caller's geometry (a version number repeats
        after Redis lost its data): recompute, write the states again and retry;
    -2  there is no version at all: nothing to apply to until `load` runs (the changes wait in Postgres).
]]
local cur = redis.call('GET', KEYS[1]) or '0'
local claim = redis.call('GET', KEYS[2]) or '0'
if cur ~= ARGV[1] or claim ~= ARGV[2] then return -1 end
if cur == '0' and claim == '0' then return -2 end
for v = 5, #KEYS do
  if (redis.call('HGET', KEYS[v], 'gen') or '') ~= ARGV[v] then return -1 end
end
local n = tonumber(ARGV[3])
local i = 7
local maxseq = tonumber(redis.call('GET', KEYS[3]) or '0')
for c = 1, n do
  local seq = tonumber(ARGV[i]); local field = ARGV[i + 1]; local value = ARGV[i + 2]
  i = i + 3
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[4], '*', 'k', field, 's', seq, 'v', value)
  if seq > maxseq then maxseq = seq end
end
redis.call('SET', KEYS[3], maxseq)
return n
