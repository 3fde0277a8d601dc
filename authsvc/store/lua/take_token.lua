-- Take one token from a token bucket (GCRA: the bucket is the time its next token is due).
-- KEYS[1] the bucket of one scope and value (a string: ms at which the bucket is full again)
-- ARGV[1] now (s)   ARGV[2] tokens the bucket holds   ARGV[3] seconds to refill it all
-- returns 0 when a token was taken, else the seconds until one is due
--
-- A full bucket allows ARGV[2] requests at once, then one every ARGV[3]/ARGV[2] seconds:
-- unlike fixed windows, no double burst at a window's edge. A refused request takes nothing.
local bucket = KEYS[1]
local now = tonumber(ARGV[1]) * 1000
local capacity, refill = tonumber(ARGV[2]), tonumber(ARGV[3]) * 1000
local interval = refill / capacity

local full_at = tonumber(redis.call("GET", bucket))
if not full_at or full_at < now then
  full_at = now
end
local next_full_at = full_at + interval
local allowed_at = next_full_at - refill
if allowed_at > now then
  return math.ceil((allowed_at - now) / 1000)
end
-- The TTL only collects the key once the bucket is full again; `now` decides the rest.
-- At least 1 ms: with a very large bucket the next token is due within the same
-- millisecond (or, past float precision, at `now` itself), and PX 0 is an error.
redis.call("SET", bucket, string.format("%.3f", next_full_at), "PX",
  math.max(1, math.ceil(next_full_at - now)))
return 0
