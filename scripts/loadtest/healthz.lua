-- GET /healthz: wrk's static request, plus the JSON summary.
package.path = debug.getinfo(1, "S").source:match("^@(.*/)") .. "?.lua;" .. package.path
local common = require("common")

setup = common.setup

function done(summary, latency, requests)
   common.done(summary, latency)
end
