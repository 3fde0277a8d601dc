-- GET the URL's path; with a tokens file, each request carries the next token as a Bearer
-- (cycling through the file): verify, verify_fresh, me. Without one: the ceiling.
-- args[3], when given, is sent as the Origin header (verify_origin).
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

local next_token
local origin

function init(args)
  next_token = cycler(read_lines(args[1], tonumber(args[2])))
  origin = args[3]
end

function request()
  local token = next_token()
  if token == nil then
    return wrk.format("GET")
  end
  local headers = {["Authorization"] = "Bearer " .. token}
  if origin ~= nil then
    headers["Origin"] = origin
  end
  return wrk.format("GET", nil, headers)
end
