-- POST /oauth/introspect (RFC 7662) as a resource server does: Basic credentials of an
-- introspection client (args[3], already base64), one access token per request from the
-- file. A 200 that does not say "active":true is counted as bad.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

local next_token, headers

function init(args)
  next_token = cycler(read_lines(args[1], tonumber(args[2])))
  headers = {
    ["Authorization"] = "Basic " .. args[3],
    ["Content-Type"] = "application/x-www-form-urlencoded",
  }
end

function request()
  local token = next_token() or "none"
  return wrk.format("POST", nil, headers, "token=" .. token .. "&token_type_hint=access_token")
end

function response(status, headers, body)
  if status ~= 200 or not string.find(body, '"active":true', 1, true) then
    refuse(status, body)
  end
end
