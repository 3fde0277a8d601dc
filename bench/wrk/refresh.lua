-- Refresh chains: every token is used once, and each 200's refresh_token is the next one
-- of its chain. A FIFO holds the chains' current tokens (one chain per connection at the
-- start, and a few spares); a response queues its successor, the next request of any
-- connection takes the oldest. Each chain so has at most one request in flight and
-- rotates for the whole run.
-- Anything but a 200 with a refresh_token breaks its chain: counted as bad, which
-- invalidates the run.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

local queue, head, tail = {}, 1, 0

function init(args)
  queue = read_lines(args[1], tonumber(args[2]))
  tail = #queue
end

function request()
  local token = "starved"  -- no chain left: malformed on purpose, refused, counted
  if head <= tail then
    token = queue[head]
    queue[head] = nil
    head = head + 1
  end
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"},
                    '{"refresh_token":"' .. token .. '"}')
end

function response(status, headers, body)
  local successor = status == 200 and string.match(body, '"refresh_token":"([^"]+)"')
  if successor then
    tail = tail + 1
    queue[tail] = successor
  else
    refuse(status, body)
  end
end
