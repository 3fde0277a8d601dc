-- End every session of a user at once (logout-all).
-- KEYS[1] user hash   KEYS[2] session index   KEYS[3..] session and chain keys to delete
-- ARGV[1..] the session ids listed in KEYS[3..], to drop from the index
-- returns the number of index entries removed
-- Bumping the epoch is what ends the sessions, all of them and at once: a session is live
-- only while its epoch is the user's. Deleting the listed keys only frees memory; a session
-- created after the caller read the index is dead by its epoch and pruned later.
if redis.call("EXISTS", KEYS[1]) == 0 then
  return 0
end
redis.call("HINCRBY", KEYS[1], "epoch", 1)
if #KEYS > 2 then
  redis.call("DEL", unpack(KEYS, 3))
end
if #ARGV > 0 then
  return redis.call("ZREM", KEYS[2], unpack(ARGV))
end
return 0
