-- Refresh within grace: cycle through tokens that were each used once already, so every
-- request is a retry inside the reuse grace and gets the cached successor back (200).
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

local next_token

function init(args)
  next_token = cycler(read_lines(args[1], tonumber(args[2])))
end

function request()
  local token = next_token() or "none"
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"},
                    '{"refresh_token":"' .. token .. '"}')
end
