-- end_sessions(user_key, index_key, keep_sid): end every session of a user but keep_sid
-- ("" for none), all at once, and the logins still checking a password too.
-- Returns the ids of the sessions it ended, whose hashes the caller deletes: that only
-- frees memory, since a session is live only while the index lists it.
--
-- Bumping the epoch ends a login whose password check read the user before this script
-- and whose own script (login.lua) runs after it. A login that read the user after it
-- checked the password this script wrote, so it is no racer to end.
local function end_sessions(user_key, index_key, keep_sid)
  redis.call("HINCRBY", user_key, "epoch", 1)
  local ended = {}
  for _, sid in ipairs(redis.call("ZRANGE", index_key, 0, -1)) do
    if sid ~= keep_sid then
      ended[#ended + 1] = sid
    end
  end
  -- ZREM in slices: unpack() of a long list overflows Lua's stack.
  for first = 1, #ended, 1000 do
    redis.call("ZREM", index_key, unpack(ended, first, math.min(first + 999, #ended)))
  end
  return ended
end
