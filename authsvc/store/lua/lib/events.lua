-- push_event(events, event, per_user, ttl): put an encoded security event (see
-- authsvc/store/eventcodec.py) at the head of a user's list of events, newest first, keep
-- only the newest per_user, and keep the list ttl seconds after its newest event. Readers
-- leave out events older than ttl, so one that outlived its time in a list kept alive by
-- newer ones is never listed. An empty event ("") records nothing.
local function push_event(events, event, per_user, ttl)
  if event == "" then
    return
  end
  redis.call("LPUSH", events, event)
  redis.call("LTRIM", events, 0, tonumber(per_user) - 1)
  redis.call("EXPIRE", events, ttl)
end

-- with_session_id(head, sid): finish an event whose caller encoded everything but its
-- session id (eventcodec.encode_without_session) with the MessagePack str of sid.
local function with_session_id(head, sid)
  local length = #sid
  if length < 32 then
    return head .. string.char(0xa0 + length) .. sid
  end
  return head .. string.char(0xd9, length) .. sid
end
