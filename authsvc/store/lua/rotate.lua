-- Rotate a session's refresh token: the heart of single use, grace and replay.
-- KEYS[1] user hash   KEYS[2] session hash   KEYS[3] session's used-token set (chain)
-- KEYS[4] user's session index (zset)
-- ARGV[1] session id   ARGV[2] presented token hash   ARGV[3] successor token hash
-- ARGV[4] sealed successor (opens only with the presented token)   ARGV[5] now
-- ARGV[6] grace seconds   ARGV[7] idle ttl
-- returns {"ok", expires_at} | {"grace", sealed successor, expires_at} | {"replay"} | {"unknown"}
local user_key, session_key, chain_key, index_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local sid, presented, successor, sealed = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now, grace, idle_ttl = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])

local function revoke()
  redis.call("DEL", session_key, chain_key)
  redis.call("ZREM", index_key, sid)
end

local s = redis.call("HMGET", session_key,
  "epoch", "expires_at", "max_expires_at", "token", "prev", "prev_used_at", "successor")
local epoch, expires_at, max_expires_at = s[1], tonumber(s[2]), tonumber(s[3])
local current, prev, prev_used_at, cached = s[4], s[5], tonumber(s[6]), s[7]
if not epoch then
  return {"unknown"}
end
if epoch ~= redis.call("HGET", user_key, "epoch") or expires_at <= now then
  revoke()
  return {"unknown"}
end

if presented == current then
  local new_expires_at = math.min(now + idle_ttl, max_expires_at)
  redis.call("HSET", session_key, "token", successor, "prev", presented,
    "prev_used_at", now, "successor", sealed, "last_used_at", now,
    "expires_at", new_expires_at)
  redis.call("EXPIREAT", session_key, new_expires_at)
  -- 128 bits of the hash are plenty to recognise a replay and halve the chain's memory.
  redis.call("SADD", chain_key, string.sub(presented, 1, 32))
  redis.call("EXPIREAT", chain_key, new_expires_at)
  redis.call("ZADD", index_key, new_expires_at, sid)
  local latest = redis.call("ZRANGE", index_key, -1, -1, "WITHSCORES")
  redis.call("EXPIREAT", index_key, tonumber(latest[2]))
  return {"ok", new_expires_at}
end

-- The grace is one token deep: "prev" is only ever the token whose successor is still
-- unused, because using that successor overwrites "prev".
if presented == prev and now - prev_used_at <= grace then
  return {"grace", cached, expires_at}
end

if presented == prev or redis.call("SISMEMBER", chain_key, string.sub(presented, 1, 32)) == 1 then
  -- A used token came back after its grace: someone holds a copy. End this session only;
  -- the user's other sessions were not exposed by this token.
  revoke()
  return {"replay"}
end

-- Never part of this chain: knowing a session id must not be enough to end the session.
return {"unknown"}
