--[[
  A failed build stops announcing itself (build.ts): removes the building pointer if it still holds this build's
  claim (nobody started another since).

  Input:
    KEYS[1]  building pointer
    ARGV[1]  the failed build's claim

  Output:
    1
]]
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
