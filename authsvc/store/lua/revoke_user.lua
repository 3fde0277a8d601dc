-- End every session of a user at once (logout-all).
-- KEYS[1] user hash   KEYS[2] user's session index (zset)   KEYS[3..] session keys to delete
-- returns 1 when the user exists, else 0
-- Deleting the index is what ends the sessions, all of them and at once: a session is live
-- only while it has an index entry. Bumping the epoch ends a login whose password check ran
-- before this script and whose own script runs after it. Deleting the listed keys only
-- frees memory; a session created after the caller read the index is ended all the same
-- and its hash expires on its own.
if redis.call("EXISTS", KEYS[1]) == 0 then
  return 0
end
redis.call("HINCRBY", KEYS[1], "epoch", 1)
redis.call("DEL", unpack(KEYS, 2))
return 1
