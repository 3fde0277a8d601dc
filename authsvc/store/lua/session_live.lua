-- Tell whether a session is live, for access-token checks (me, verify, introspection).
-- KEYS[1] user hash   KEYS[2] session hash
-- ARGV[1] now
-- returns {1, username} when live, {0} otherwise
local s = redis.call("HMGET", KEYS[2], "epoch", "expires_at")
if not s[1] or tonumber(s[2]) <= tonumber(ARGV[1]) then
  return {0}
end
local u = redis.call("HMGET", KEYS[1], "epoch", "username")
if u[1] ~= s[1] then
  return {0}
end
return {1, u[2]}
