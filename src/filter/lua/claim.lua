--[[
  Claims the building pointer for a filter build (build.ts): `V|generation`, a value no other build can hold (the
  generation id is random), so that the flip can prove no other build has claimed it since (two builds can overlap
  when the advisory lock was lost with its connection). When Redis serves no version (it lost its data, or never had
  one), the applied watermark is raised to the snapshot seq in the same script: the new version will hold everything
  up to it, so an applier must not walk the whole history into it (it would re-apply millions of changes and hold a
  live RET behind them). With a current version the watermark is left alone: that version still needs every change.

  Input:
    KEYS[1]  building pointer
    KEYS[2]  current pointer
    KEYS[3]  applied watermark
    ARGV[1]  the claim ("V|generation")
    ARGV[2]  snapshot seq

  Output:
    the claim this one replaced when it names a version other than the current one (a stale build), or false
]]
local old = redis.call('GET', KEYS[1])
local cur = redis.call('GET', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1])
if not cur and tonumber(redis.call('GET', KEYS[3]) or '0') < tonumber(ARGV[2]) then redis.call('SET', KEYS[3], ARGV[2]) end
if old and old ~= ARGV[1] and string.match(old, '^%d+') ~= cur then return old end
return false
