-- GET the URL's path; with a tokens file, each request carries the next token as a Bearer
-- (cycling through the file): verify, verify_fresh, me. Without one: the ceiling.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

local tokens, n = {}, 0

function init(args)
  tokens = read_lines(args[1], tonumber(args[2]))
end

function request()
  if #tokens == 0 then
    return wrk.format("GET")
  end
  n = n % #tokens + 1
  return wrk.format("GET", nil, {["Authorization"] = "Bearer " .. tokens[n]})
end
