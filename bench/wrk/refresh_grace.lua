-- Refresh within grace: cycle through tokens that were each used once already, so every
-- request is a retry inside the reuse grace and gets the cached successor back (200).
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

local tokens, n = {}, 0

function init(args)
  tokens = read_lines(args[1], tonumber(args[2]))
end

function request()
  local token = "none"
  if #tokens > 0 then
    n = n % #tokens + 1
    token = tokens[n]
  end
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"},
                    '{"refresh_token":"' .. token .. '"}')
end
