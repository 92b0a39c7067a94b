-- POST /v1/rank, cycling through a pool of pre-generated bodies (one a line).
-- wrk ... -s rank.lua URL -- BODIES_FILE
package.path = debug.getinfo(1, "S").source:match("^@(.*/)") .. "?.lua;" .. package.path
local common = require("common")

local reqs, i

setup = common.setup

function init(args)
   reqs = common.load_requests(args[1], "POST", "/v1/rank")
   -- Each thread starts at its own place in the pool.
   i = (id * 1009) % #reqs
end

function request()
   i = i % #reqs + 1
   return reqs[i]
end

function done(summary, latency, requests)
   common.done(summary, latency)
end
