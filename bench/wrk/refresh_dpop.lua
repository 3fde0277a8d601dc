-- Refresh chains of DPoP-bound sessions: as refresh.lua, and every request carries the
-- next proof of args[3] (a file of proofs signed before the run, each with its own jti,
-- for POST /v1/auth/refresh): a proof is accepted once, so none is sent twice. Out of
-- proofs, a request goes without one and is refused (counted bad: the run is invalid).
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

local queue, head, tail = {}, 1, 0
local proofs, next_proof = {}, 1

function init(args)
  queue = read_lines(args[1], tonumber(args[2]))
  tail = #queue
  proofs = read_lines(args[3], tonumber(args[2]))
end

function request()
  local token = "starved"  -- no chain left: malformed on purpose, refused, counted
  if head <= tail then
    token = queue[head]
    queue[head] = nil
    head = head + 1
  end
  local headers = {["Content-Type"] = "application/json"}
  if next_proof <= #proofs then
    headers["DPoP"] = proofs[next_proof]
    proofs[next_proof] = nil
    next_proof = next_proof + 1
  end
  return wrk.format("POST", nil, headers, '{"refresh_token":"' .. token .. '"}')
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
