-- include: bucket
-- Take one token from a token bucket (see lib/bucket.lua).
-- KEYS[1] the bucket of one scope and value
-- ARGV[1] now (s)   ARGV[2] tokens the bucket holds   ARGV[3] seconds to refill it all
-- returns 0 when a token was taken, else the seconds until one is due
return take_token(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
