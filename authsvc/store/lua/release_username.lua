-- Free a username claim, only while it still names the given user: a deleted account's,
-- never the claim of an account registered since under the same name.
-- KEYS[1] the username claim (str: user id)
-- ARGV[1] the user id it must name
-- returns 1 when the claim was deleted, else 0
if redis.call("GET", KEYS[1]) == ARGV[1] then
  redis.call("DEL", KEYS[1])
  return 1
end
return 0
