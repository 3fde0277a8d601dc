-- Count one login attempt in the fixed window the key names.
-- KEYS[1] counter of this window   ARGV[1] Unix time the window ends
-- returns the attempts counted in this window, this one included
local attempts = redis.call("INCR", KEYS[1])
if attempts == 1 then
  -- Garbage collection only: the window is in the key's name, decided from `now`.
  redis.call("EXPIREAT", KEYS[1], ARGV[1])
end
return attempts
