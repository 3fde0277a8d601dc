-- include: events
-- Record one security event of a user, for events no other script decides (a failed login,
-- and what the operator API does).
-- KEYS[1] the user's list of events
-- ARGV[1] events kept per user   ARGV[2] their ttl   ARGV[3] the encoded event, or "": a
--         call that records nothing (an unknown username costs what a known one does)
push_event(KEYS[1], ARGV[3], ARGV[1], ARGV[2])
return 1
