-- GET the URL's path with DPoP-bound access tokens: each line of args[1] is a token and a
-- proof for it (its ath), signed before the run with its own jti; each request takes the
-- next line, never one twice (a jti is accepted once). Out of lines, a request goes
-- without a proof and is refused (counted bad: the run is invalid).
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

local lines, next_line = {}, 1

function init(args)
  lines = read_lines(args[1], tonumber(args[2]))
end

function request()
  local line = lines[next_line]
  if line == nil then
    return wrk.format("GET", nil, {["Authorization"] = "DPoP exhausted"})
  end
  lines[next_line] = nil
  next_line = next_line + 1
  local token, proof = string.match(line, "^(%S+) (%S+)$")
  return wrk.format("GET", nil, {["Authorization"] = "DPoP " .. token, ["DPoP"] = proof})
end

function response(status, headers, body)
  if status ~= 200 then
    refuse(status, body)
  end
end
