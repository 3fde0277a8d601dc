-- Create a session for a user whose password was just verified.
-- KEYS[1] user hash   KEYS[2] session hash   KEYS[3] user's session index (zset)
-- ARGV[1] session id   ARGV[2] refresh token hash   ARGV[3] now   ARGV[4] idle ttl
-- ARGV[5] session max age   ARGV[6] user epoch read before the password check
-- ARGV[7] device   ARGV[8] user agent   ARGV[9] ip   ARGV[10] upgraded password hash or ""
-- returns {"ok", expires_at} | {"revoked"} | {"unknown"}
local user_key, session_key, index_key = KEYS[1], KEYS[2], KEYS[3]
local sid, token_hash = ARGV[1], ARGV[2]
local now, idle_ttl, max_age = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local epoch_seen = ARGV[6]

local epoch = redis.call("HGET", user_key, "epoch")
if not epoch then
  return {"unknown"}
end
-- A logout-all ran between the password check and now: it must end this session too.
if epoch ~= epoch_seen then
  return {"revoked"}
end

local max_expires_at = now + max_age
local expires_at = math.min(now + idle_ttl, max_expires_at)
redis.call("HSET", session_key,
  "created_at", now, "last_used_at", now, "max_expires_at", max_expires_at,
  "expires_at", expires_at, "epoch", epoch, "token", token_hash,
  "device", ARGV[7], "user_agent", ARGV[8], "ip", ARGV[9])
redis.call("EXPIREAT", session_key, expires_at)

redis.call("ZREMRANGEBYSCORE", index_key, "-inf", now)
redis.call("ZADD", index_key, expires_at, sid)
local latest = redis.call("ZRANGE", index_key, -1, -1, "WITHSCORES")
redis.call("EXPIREAT", index_key, tonumber(latest[2]))

if ARGV[10] ~= "" then
  redis.call("HSET", user_key, "password_hash", ARGV[10])
end
return {"ok", expires_at}
