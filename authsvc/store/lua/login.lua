-- include: events
-- Create a session for a user whose password was just verified; enforce the session cap.
-- Record its security events: a login, and a session_evicted for each session the cap ends.
-- KEYS[1] user hash   KEYS[2] session hash   KEYS[3] user's session index (zset)
-- KEYS[4] user's list of events
-- ARGV[1] session id   ARGV[2] refresh token hash   ARGV[3] now   ARGV[4] idle ttl
-- ARGV[5] session max age   ARGV[6] user epoch read before the password check
-- ARGV[7] device   ARGV[8] user agent   ARGV[9] ip   ARGV[10] upgraded password hash or ""
-- ARGV[11] most live sessions per user
-- ARGV[12] events kept per user   ARGV[13] their ttl   ARGV[14] the login's event or ""
-- ARGV[15] an evicted session's event without its session id, or ""
-- ARGV[16] the DPoP key's thumbprint the session is bound to, or "" (not bound)
-- returns {"ok", expires_at, roles, evicted session id...} | {"disabled"} | {"revoked"}
--   | {"unknown"}; roles are the user's, comma-separated ("" when none)
local user_key, session_key, index_key = KEYS[1], KEYS[2], KEYS[3]
local sid, token_hash = ARGV[1], ARGV[2]
local now, idle_ttl, max_age = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local epoch_seen, max_sessions = ARGV[6], tonumber(ARGV[11])

local user = redis.call("HMGET", user_key, "epoch", "disabled", "roles")
local epoch = user[1]
if not epoch then
  -- No such user, or one deleted while its password was being checked.
  return {"unknown"}
end
-- Disabled while this login checked the password (the caller refused it if it was already).
if user[2] then
  return {"disabled"}
end
-- A logout-all ran between the password check and now: it must end this session too.
if epoch ~= epoch_seen then
  return {"revoked"}
end

-- The same login run again: redis-py sends a command once more when its reply was lost
-- (a connection reset after Redis ran it). The session this login made is there with its
-- token: answer as the first run did, and end no other session, record no second event.
local made = redis.call("HMGET", session_key, "h", "c")
if made[1] == token_hash and redis.call("ZSCORE", index_key, sid) then
  local made_at = tonumber(made[2])
  return {"ok", math.min(made_at + idle_ttl, made_at + max_age), user[3] or ""}
end

-- The index scores each session by its last use, so its head is the least recently used.
-- Idle sessions have ended already; the cap ends the least recently used live ones, here,
-- so that concurrent logins cannot overshoot it. Only the index entry goes: a session is
-- live only while it has one, and the caller deletes the evicted sessions' hashes.
redis.call("ZREMRANGEBYSCORE", index_key, "-inf", now - idle_ttl)
local reply = {"ok", 0, user[3] or ""}
local excess = redis.call("ZCARD", index_key) - max_sessions + 1
if excess > 0 then
  local evicted = redis.call("ZRANGE", index_key, 0, excess - 1)
  redis.call("ZREM", index_key, unpack(evicted))
  for _, evicted_sid in ipairs(evicted) do
    reply[#reply + 1] = evicted_sid
    if ARGV[15] ~= "" then
      push_event(KEYS[4], with_session_id(ARGV[15], evicted_sid), ARGV[12], ARGV[13])
    end
  end
end

local expires_at = math.min(now + idle_ttl, now + max_age)
-- Short field names keep the hash a small listpack: n position of the current token,
-- h its hash, c created_at, d device, a user agent, i ip. Its last use is the index score.
redis.call("HSET", session_key, "n", 0, "h", token_hash, "c", now,
  "d", ARGV[7], "a", ARGV[8], "i", ARGV[9])
-- k: the key a bound session's refreshes must prove (rotate.lua); absent when unbound.
if ARGV[16] and ARGV[16] ~= "" then
  redis.call("HSET", session_key, "k", ARGV[16])
end
redis.call("EXPIREAT", session_key, expires_at)
redis.call("ZADD", index_key, now, sid)
-- Every session's last use is at most now, so none outlives now + idle ttl.
redis.call("EXPIREAT", index_key, now + idle_ttl)

if ARGV[10] ~= "" then
  redis.call("HSET", user_key, "password_hash", ARGV[10])
end
push_event(KEYS[4], ARGV[14], ARGV[12], ARGV[13])
reply[2] = expires_at
return reply
