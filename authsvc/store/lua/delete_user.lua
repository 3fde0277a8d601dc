-- Delete a user's own slot: its record, its session index, its security events and its
-- sessions, at once.
-- KEYS[1] user hash   KEYS[2] user's session index (zset)   KEYS[3] user's list of events
--   (keyspace.user_keys)
-- KEYS[3..] the keys of the sessions the caller read from the index (keyspace.session_keys)
-- returns {username, session id...} with the ids the index holds now (their keys the
-- caller deletes too: sessions started after it read the index), or {} when no such user
--
-- The user hash goes first of all the account's keys, in this one script: a login whose
-- password check is still running then finds no user in login.lua and starts nothing, a
-- refresh or an access token finds no index entry. What lies in other slots (the username
-- claim, the failure log) is removed by the caller after this, so a name never points
-- to a user that can still log in while it is being deleted.
local user_key, index_key = KEYS[1], KEYS[2]
local username = redis.call("HGET", user_key, "username")
if not username then
  return {}
end
local reply = {username}
for _, sid in ipairs(redis.call("ZRANGE", index_key, 0, -1)) do
  reply[#reply + 1] = sid
end
redis.call("DEL", unpack(KEYS))
return reply
