-- include: events
-- Set a user's roles, which every access token issued from now on carries, recording its
-- security event (roles_changed) in the same step.
-- KEYS[1] user hash   KEYS[2] user's list of events
-- ARGV[1] the roles, comma-separated; "" clears them (no field: no bytes for no roles)
-- ARGV[2] events kept per user   ARGV[3] their ttl   ARGV[4] the event to record, or ""
-- returns 1, or 0 when there is no such user (nothing is written: HSET would create one)
if redis.call("EXISTS", KEYS[1]) == 0 then
  return 0
end
if ARGV[1] == "" then
  redis.call("HDEL", KEYS[1], "roles")
else
  redis.call("HSET", KEYS[1], "roles", ARGV[1])
end
push_event(KEYS[2], ARGV[4], ARGV[2], ARGV[3])
return 1
