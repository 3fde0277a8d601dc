-- include: events
-- End one session (logout, DELETE /v1/auth/sessions/{id}, /oauth/revoke).
-- KEYS[1] session hash   KEYS[2] user's session index (zset)   KEYS[3] sealed successor
-- KEYS[4] user's list of events
-- ARGV[1] session id   ARGV[2] now   ARGV[3] idle ttl   ARGV[4] session max age
-- ARGV[5] events kept per user   ARGV[6] their ttl
-- ARGV[7] the event recorded when a live session ended (logout, session_revoked), or ""
-- returns 1 when a live session ended, 0 when there was none
local last_used_at = tonumber(redis.call("ZSCORE", KEYS[2], ARGV[1]))
local created_at = tonumber(redis.call("HGET", KEYS[1], "c"))
local live = last_used_at and created_at
  and math.min(last_used_at + tonumber(ARGV[3]), created_at + tonumber(ARGV[4])) > tonumber(ARGV[2])
redis.call("DEL", KEYS[1], KEYS[3])
redis.call("ZREM", KEYS[2], ARGV[1])
if live then
  push_event(KEYS[4], ARGV[7], ARGV[5], ARGV[6])
  return 1
end
return 0
