-- Tell whether a session is live, for access-token checks (me, verify, introspection).
-- KEYS[1] user hash   KEYS[2] session hash   KEYS[3] user's session index (zset)
-- ARGV[1] session id   ARGV[2] now   ARGV[3] idle ttl   ARGV[4] session max age
-- returns {1, username} when live, {0} otherwise
local last_used_at = tonumber(redis.call("ZSCORE", KEYS[3], ARGV[1]))
local created_at = tonumber(redis.call("HGET", KEYS[2], "c"))
if not last_used_at or not created_at then
  return {0}
end
local expires_at = math.min(last_used_at + tonumber(ARGV[3]), created_at + tonumber(ARGV[4]))
if expires_at <= tonumber(ARGV[2]) then
  return {0}
end
return {1, redis.call("HGET", KEYS[1], "username")}
