-- POST /oauth/introspect (RFC 7662) as a resource server does: Basic credentials of an
-- introspection client (args[3], already base64), one access token per request from the
-- file. A 200 that does not say "active":true is counted as bad.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

local tokens, n, headers = {}, 0, {}

function init(args)
  tokens = read_lines(args[1], tonumber(args[2]))
  headers = {
    ["Authorization"] = "Basic " .. args[3],
    ["Content-Type"] = "application/x-www-form-urlencoded",
  }
end

function request()
  local token = "none"
  if #tokens > 0 then
    n = n % #tokens + 1
    token = tokens[n]
  end
  return wrk.format("POST", nil, headers, "token=" .. token .. "&token_type_hint=access_token")
end

function response(status, headers, body)
  if status ~= 200 or not string.find(body, '"active":true', 1, true) then
    refuse(status, body)
  end
end
