-- Set a user's roles, which every access token issued from now on carries.
-- KEYS[1] user hash
-- ARGV[1] the roles, comma-separated; "" clears them (no field: no bytes for no roles)
-- returns 1, or 0 when there is no such user (nothing is written: HSET would create one)
if redis.call("EXISTS", KEYS[1]) == 0 then
  return 0
end
if ARGV[1] == "" then
  redis.call("HDEL", KEYS[1], "roles")
else
  redis.call("HSET", KEYS[1], "roles", ARGV[1])
end
return 1
