-- GET the URL's path; with a tokens file, each request carries the next token as a Bearer
-- (cycling through the file): verify, verify_fresh, me. Without one: the ceiling.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

local next_token

function init(args)
  next_token = cycler(read_lines(args[1], tonumber(args[2])))
end

function request()
  local token = next_token()
  if token == nil then
    return wrk.format("GET")
  end
  return wrk.format("GET", nil, {["Authorization"] = "Bearer " .. token})
end
