-- End one session (logout, DELETE /v1/auth/sessions/{id}, /oauth/revoke).
-- KEYS[1] session hash   KEYS[2] user's session index (zset)   KEYS[3] sealed successor
-- ARGV[1] session id   ARGV[2] now   ARGV[3] idle ttl   ARGV[4] session max age
-- returns 1 when a live session ended, 0 when there was none
local last_used_at = tonumber(redis.call("ZSCORE", KEYS[2], ARGV[1]))
local created_at = tonumber(redis.call("HGET", KEYS[1], "c"))
local live = last_used_at and created_at
  and math.min(last_used_at + tonumber(ARGV[3]), created_at + tonumber(ARGV[4])) > tonumber(ARGV[2])
redis.call("DEL", KEYS[1], KEYS[3])
redis.call("ZREM", KEYS[2], ARGV[1])
if live then
  return 1
end
return 0
