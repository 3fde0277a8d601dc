-- take_token(bucket, now, capacity, refill): take one token from a token bucket (GCRA: the
-- bucket is a string, the time in ms at which it is full again). now and refill in seconds.
-- Returns 0 when a token was taken, else the seconds until one is due.
--
-- A full bucket allows `capacity` requests at once, then one every refill/capacity seconds:
-- unlike fixed windows, no double burst at a window's edge. A refused request takes nothing.
local function take_token(bucket, now_s, capacity, refill_s)
  local now = tonumber(now_s) * 1000
  local refill = tonumber(refill_s) * 1000
  local interval = refill / tonumber(capacity)

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
end
