--[[
  Leases tokens of one API key's shared token bucket to one gateway process (auth/rate-limit.ts). The bucket is
  refilled by the time elapsed on Redis's own clock (TIME), so every process sees one clock. Tokens the process
  already let through on its own (while it had no lease yet) are charged first; the bucket may go into debt by up
  to one capacity for them, which later leases repay. The hash also remembers which processes leased this key
  lately, so that a process knows how many share the key if Redis goes away.

  Input:
    KEYS[1]  the key's bucket: a hash {t = tokens, ts = ms of the last refill, p:<process> = ms of its last lease}
    ARGV[1]  capacity (tokens; one second's worth of the rate, at least 1)
    ARGV[2]  rate (tokens per second, > 0)
    ARGV[3]  tokens wanted (an integer >= 0)
    ARGV[4]  tokens already let through by the caller, to charge (an integer >= 0)
    ARGV[5]  the caller's process id
    ARGV[6]  peer window (ms): processes that leased within it count as sharing the key
    ARGV[7]  time to live of the hash (ms)

  Output:
    { granted tokens, ms until the bucket holds a whole token again (0: it does), processes sharing the key (>= 1),
      whole tokens left in the bucket (floored; negative: debt) }
]]
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local owed = tonumber(ARGV[4])
local me = 'p:' .. ARGV[5]
local since = now - tonumber(ARGV[6])

local tokens, ts = capacity, now
local peers = 1
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local f, v = fields[i], fields[i + 1]
  if f == 't' then tokens = tonumber(v)
  elseif f == 'ts' then ts = tonumber(v)
  elseif f ~= me and string.sub(f, 1, 2) == 'p:' then
    if tonumber(v) >= since then peers = peers + 1 else redis.call('HDEL', KEYS[1], f) end
  end
end

-- A clock that went back (a failed-over Redis) refills nothing rather than something negative.
if now > ts then tokens = math.min(capacity, tokens + (now - ts) * rate / 1000) end
tokens = math.max(tokens - owed, -capacity)
local granted = 0
if tokens >= 1 then
  granted = math.min(want, math.floor(tokens))
  tokens = tokens - granted
end
local wait = 0
if tokens < 1 then wait = math.ceil((1 - tokens) * 1000 / rate) end

redis.call('HSET', KEYS[1], 't', tostring(tokens), 'ts', now, me, now)
redis.call('PEXPIRE', KEYS[1], ARGV[7])
return { granted, wait, peers, math.floor(tokens) }
