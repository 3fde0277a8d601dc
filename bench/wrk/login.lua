-- POST /v1/auth/login with one user's password (args[3], a JSON body): every request runs
-- argon2id with the server's parameters and starts a session.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.body = args[3]
end
