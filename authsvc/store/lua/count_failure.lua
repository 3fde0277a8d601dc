-- Count a login attempt against an account as a failure until it succeeds (a success
-- deletes the log): a sliding window, so at most ARGV[2] failures in any ARGV[3] seconds.
-- KEYS[1] the account's log of attempts (zset: attempt id -> time)
-- ARGV[1] now   ARGV[2] most failures in a window   ARGV[3] window seconds
-- ARGV[4] this attempt's id (unique)
-- returns 0 when the attempt may go on, else the seconds until the oldest leaves the window
local log = KEYS[1]
local now, limit, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])

redis.call("ZREMRANGEBYSCORE", log, "-inf", now - window)
if redis.call("ZCARD", log) >= limit then
  local oldest = redis.call("ZRANGE", log, 0, 0, "WITHSCORES")
  return math.max(1, tonumber(oldest[2]) + window - now)
end
-- Counted before the password is checked, so concurrent guesses cannot all slip in.
redis.call("ZADD", log, now, ARGV[4])
redis.call("EXPIRE", log, window)
return 0
