-- include: end_sessions
-- include: events
-- Set a user's password hash and end every other session (a password change, or an
-- operator setting it), in one step: no session but the kept one outlives the change.
-- Records its security event (password_changed) in the same step.
-- KEYS[1] user hash   KEYS[2] user's session index (zset)   KEYS[3] user's list of events
-- ARGV[1] the new password hash   ARGV[2] the session to keep, "" for none
-- ARGV[3] events kept per user   ARGV[4] their ttl   ARGV[5] the event to record, or ""
-- returns {1, ended session id...} | {0} when there is no such user
local user_key, index_key = KEYS[1], KEYS[2]
if redis.call("EXISTS", user_key) == 0 then
  return {0}
end
redis.call("HSET", user_key, "password_hash", ARGV[1])
local reply = {1}
for _, sid in ipairs(end_sessions(user_key, index_key, ARGV[2])) do
  reply[#reply + 1] = sid
end
push_event(KEYS[3], ARGV[5], ARGV[3], ARGV[4])
return reply
