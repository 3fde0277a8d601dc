-- include: end_sessions
-- include: events
-- Disable a user (every session ends; login.lua refuses it) or enable it again, recording
-- its security event (account_disabled, account_enabled) in the same step.
-- KEYS[1] user hash   KEYS[2] user's session index (zset)   KEYS[3] user's list of events
-- ARGV[1] "1" to disable, "0" to enable
-- ARGV[2] events kept per user   ARGV[3] their ttl   ARGV[4] the event to record, or ""
-- returns {1, ended session id...} | {0} when there is no such user
local user_key, index_key = KEYS[1], KEYS[2]
if redis.call("EXISTS", user_key) == 0 then
  return {0}
end
push_event(KEYS[3], ARGV[4], ARGV[2], ARGV[3])
if ARGV[1] == "0" then
  redis.call("HDEL", user_key, "disabled")
  return {1}
end
redis.call("HSET", user_key, "disabled", "1")
local reply = {1}
for _, sid in ipairs(end_sessions(user_key, index_key, "")) do
  reply[#reply + 1] = sid
end
return reply
