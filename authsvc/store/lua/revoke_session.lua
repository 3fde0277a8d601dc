-- End one session (logout, DELETE /v1/auth/sessions/{id}).
-- KEYS[1] user hash   KEYS[2] session hash   KEYS[3] session's chain   KEYS[4] session index
-- ARGV[1] session id   ARGV[2] now
-- returns 1 when a live session ended, 0 when there was none
local s = redis.call("HMGET", KEYS[2], "epoch", "expires_at")
local live = s[1] and tonumber(s[2]) > tonumber(ARGV[2])
  and s[1] == redis.call("HGET", KEYS[1], "epoch")
redis.call("DEL", KEYS[2], KEYS[3])
redis.call("ZREM", KEYS[4], ARGV[1])
if live then
  return 1
end
return 0
