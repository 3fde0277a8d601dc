-- include: bucket
-- include: events
-- Rotate a session's refresh token: the heart of single use, grace and replay.
-- KEYS[1] session hash   KEYS[2] user's session index (zset)   KEYS[3] sealed successor
-- KEYS[4] user hash, whose roles the successor's access token carries
-- KEYS[5] user's list of events
-- KEYS[6] (optional) the client address's refresh bucket, taken from first
-- ARGV[1] session id   ARGV[2] position of the presented token in the chain
-- ARGV[3] presented token hash   ARGV[4] successor token hash
-- ARGV[5] sealed successor: its refresh token and its access token's claims, which open
--         only with the presented token (the store never holds a token usable to refresh)
-- ARGV[6] now
-- ARGV[7] grace seconds   ARGV[8] idle ttl   ARGV[9] session max age
-- ARGV[10] seconds to keep the sealed successor (a little over the grace)
-- ARGV[11] events kept per user   ARGV[12] their ttl
-- ARGV[13] the event a replay records (refresh_replay), or ""
-- ARGV[14] the thumbprint of the DPoP key whose proof came with the refresh, or ""
-- ARGV[15] ARGV[16] with KEYS[6]: the bucket's tokens and seconds to refill them all
-- returns {"ok", expires_at, roles, jkt} | {"grace", sealed successor, expires_at, roles, jkt}
--   | {"replay"} | {"unknown"} | {"wrong_key"} | {"limited", seconds until a token}
--   roles: the user's now, comma-separated ("" when none), read here so that a refresh
--   issues the current roles without another round trip; jkt: the key the session is
--   bound to, "" when it is not
--
-- The caller has checked the presented token's MAC: it was issued by this service, so its
-- position is true. The state is constant: the chain's current position and token hash, and
-- the time of its last rotation (the index score), however long the chain grows.
local session_key, index_key, successor_key, user_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local events_key = KEYS[5]
local sid, position, presented, successor = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local sealed, now, grace = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
local idle_ttl, max_age, successor_ttl = tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10]
local presented_jkt = ARGV[14]

-- One round trip where the bucket can share the call (not on Cluster: another slot). A
-- refused refresh changes nothing else, and its caller signs nothing.
if KEYS[6] then
  local retry_after = take_token(KEYS[6], ARGV[6], ARGV[15], ARGV[16])
  if retry_after > 0 then
    return {"limited", retry_after}
  end
end

local function revoke()
  redis.call("DEL", session_key, successor_key)
  redis.call("ZREM", index_key, sid)
end

local last_used_at = tonumber(redis.call("ZSCORE", index_key, sid))
local s = redis.call("HMGET", session_key, "n", "h", "c", "k")
local current_position, current, created_at = tonumber(s[1]), s[2], tonumber(s[3])
local jkt = s[4] or ""
if not last_used_at or not current_position then
  -- Ended: logged out, revoked, evicted by the cap, or ended by a logout-all.
  return {"unknown"}
end
-- A session bound to a DPoP key (RFC 9449 §5) is refreshed only with a proof by that key,
-- decided before anything else: who holds a copy of its tokens but not the key rotates
-- nothing, and cannot end the session by replaying a used token either.
if jkt ~= "" and jkt ~= presented_jkt then
  return {"wrong_key"}
end
local expires_at = math.min(last_used_at + idle_ttl, created_at + max_age)
if expires_at <= now then
  revoke()
  return {"unknown"}
end

if position == current_position then
  if presented ~= current then
    -- A token minted for this position whose rotation lost a race: never handed out.
    return {"unknown"}
  end
  local new_expires_at = math.min(now + idle_ttl, created_at + max_age)
  redis.call("HSET", session_key, "n", position + 1, "h", successor)
  redis.call("EXPIREAT", session_key, new_expires_at)
  redis.call("SET", successor_key, sealed, "EX", successor_ttl)
  redis.call("ZADD", index_key, now, sid)
  redis.call("EXPIREAT", index_key, now + idle_ttl)
  return {"ok", new_expires_at, redis.call("HGET", user_key, "roles") or "", jkt}
end

-- The grace is one token deep: only the token right behind the current one gets the
-- successor back, and only while that successor is unused, since using it moves the
-- position on. The index score is the time of that rotation.
if position == current_position - 1 and now - last_used_at <= grace then
  local cached = redis.call("GET", successor_key)
  if cached then
    return {"grace", cached, expires_at, redis.call("HGET", user_key, "roles") or "", jkt}
  end
  return {"unknown"}
end

if position < current_position then
  -- A used token came back after its grace: someone holds a copy. End this session only;
  -- the user's other sessions were not exposed by this token.
  revoke()
  push_event(events_key, ARGV[13], ARGV[11], ARGV[12])
  return {"replay"}
end

-- Ahead of the chain: never issued to anyone.
return {"unknown"}
