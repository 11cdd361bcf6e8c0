--[[
  Flips the current pointer (and its generation id, in the same script) to a new filter version (build.ts), only if
  that version is complete and the build still holds its claim on the building pointer (another build that claimed
  it since writes the changes to its own version, not to ours: ours would miss them); stops announcing the build and
  raises the applied watermark to the snapshot.

  Input:
    KEYS[1]  current pointer
    KEYS[2]  meta of the new version
    KEYS[3]  building pointer
    KEYS[4]  applied watermark
    KEYS[5]  current generation
    ARGV[1]  new version
    ARGV[2]  snapshot seq
    ARGV[3]  generation id of the new version
    ARGV[4]  the build's claim

  Output:
    the previous version, or false; an error reply when the version is not complete, was replaced, or the claim is
    another build's
]]
if redis.call('HGET', KEYS[2], 'complete') ~= '1' then return redis.error_reply('new version is not complete') end
if redis.call('HGET', KEYS[2], 'gen') ~= ARGV[3] then return redis.error_reply('new version was replaced while it was built') end
if redis.call('GET', KEYS[3]) ~= ARGV[4] then return redis.error_reply('another build claimed the filter while this one ran; not flipping to it') end
local old = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[5], ARGV[3])
redis.call('DEL', KEYS[3])
if tonumber(redis.call('GET', KEYS[4]) or '0') < tonumber(ARGV[2]) then redis.call('SET', KEYS[4], ARGV[2]) end
return old
