-- include: events
-- End every session of a user at once (logout-all).
-- KEYS[1] user hash   KEYS[2] user's session index (zset)   KEYS[3] user's list of events
-- KEYS[4..] session keys to delete
-- ARGV[1] events kept per user   ARGV[2] their ttl   ARGV[3] the event to record, or ""
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
redis.call("DEL", KEYS[2], unpack(KEYS, 4))
push_event(KEYS[3], ARGV[3], ARGV[1], ARGV[2])
return 1
