-- include: end_sessions
-- Set a user's password hash and end every other session (a password change, or an
-- operator setting it), in one step: no session but the kept one outlives the change.
-- KEYS[1] user hash   KEYS[2] user's session index (zset)
-- ARGV[1] the new password hash   ARGV[2] the session to keep, "" for none
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
return reply
