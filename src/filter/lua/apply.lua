--[[
  Applies a batch of changes to the current filter version and to the one being built (changes.ts, ChangeApplier):
  the exact state (only when newer by seq than the stored one, so replays and concurrent appliers are harmless), the
  bloom bits, one change-stream entry per change (key, seq and state: gateways' replicas apply it by the same
  newer-seq rule; mirror.ts), and the applied watermark.

  Input:
    KEYS[1]  current pointer
    KEYS[2]  building pointer
    KEYS[3]  applied watermark
    KEYS[4]  change stream
    ARGV[1]  current version the caller computed for, or "0"
    ARGV[2]  building claim ("N|generation", build.ts) the caller computed for, or "0"
    ARGV[3]  key prefix
    ARGV[4]  number of changes
    ARGV[5]  stream max length
    ARGV[6], ARGV[7]  the generation ids the caller took the geometry of those two versions from ("" for none)
    then per change: seq, field, value, and for each version (current first, then building; only those that
    exist): bucket, 8 bloom bit offsets

  Output:
    the number of states written;
    -1  the pointers moved, or a version is another generation than the caller's geometry (a version number repeats
        after Redis lost its data): recompute and retry;
    -2  there is no version at all: nothing to apply to until `load` runs (the changes wait in Postgres).

  Where an encoded state keeps its base-36 seq is state.ts's SEQ_LUA_PATTERN, filled into its placeholder below when
  the script is loaded (scripts.ts).
]]
local cur = redis.call('GET', KEYS[1]) or '0'
local claim = redis.call('GET', KEYS[2]) or '0'
if cur ~= ARGV[1] or claim ~= ARGV[2] then return -1 end
if cur == '0' and claim == '0' then return -2 end
local bld = string.match(claim, '^%d+')
local prefix = ARGV[3]
local versions = {}
if cur ~= '0' then versions[#versions + 1] = cur end
if bld ~= '0' and bld ~= cur then versions[#versions + 1] = bld end
for k, v in ipairs(versions) do
  if (redis.call('HGET', prefix .. 'v' .. v .. ':meta', 'gen') or '') ~= ARGV[5 + k] then return -1 end
end
local n = tonumber(ARGV[4])
local i = 8
local written = 0
local maxseq = tonumber(redis.call('GET', KEYS[3]) or '0')
for c = 1, n do
  local seq = tonumber(ARGV[i]); local field = ARGV[i + 1]; local value = ARGV[i + 2]
  i = i + 3
  for _, v in ipairs(versions) do
    local bucket = prefix .. 'v' .. v .. ':b:' .. ARGV[i]
    local old = redis.call('HGET', bucket, field)
    local oldseq = -1
    if old then oldseq = tonumber(string.match(old, '{{SEQ_LUA_PATTERN}}'), 36) end
    if oldseq < seq then
      redis.call('HSET', bucket, field, value)
      written = written + 1
    end
    local bloom = prefix .. 'v' .. v .. ':bloom'
    for b = 1, 8 do redis.call('SETBIT', bloom, ARGV[i + b], 1) end
    i = i + 9
  end
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*', 'k', field, 's', seq, 'v', value)
  if seq > maxseq then maxseq = seq end
end
redis.call('SET', KEYS[3], maxseq)
return written
