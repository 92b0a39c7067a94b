-- The pre-pass of the feedback phase: POST /v1/rank through the body pool, writing
-- "request_id<TAB>body index" of every answer to OUT_PREFIX.<thread>.tsv until the thread has
-- QUOTA of them, then stopping the thread. (Candidate ids are cmpl-<body index>-<k>, so an
-- answer says which body it answers.) Thread n sends bodies START + n, then every STEP-th one;
-- START = 0 and STEP = the number of threads make the threads share one pass over the pool.
-- wrk ... -s prepass.lua URL -- BODIES_FILE OUT_PREFIX QUOTA [START STEP]
package.path = debug.getinfo(1, "S").source:match("^@(.*/)") .. "?.lua;" .. package.path
local common = require("common")

local reqs, i, step, out, prefix, quota
captured, failed, parse_failed, first_error = 0, 0, 0, ""
local finished = false

setup = common.setup

function init(args)
   reqs = common.load_requests(args[1], "POST", "/v1/rank")
   prefix, quota = args[2], tonumber(args[3])
   out = assert(io.open(prefix .. "." .. id .. ".tsv", "w"))
   if args[4] then
      i, step = tonumber(args[4]) + id, tonumber(args[5])
   else
      i, step = id * 1009 + 17, 1
   end
   -- wrk calls thread 0's request() once after init to check it; that one is not sent.
   verifying = (id == 0)
end

function request()
   if finished then return "" end -- parks the connection until the thread stops
   if verifying then
      verifying = false
      return reqs[1]
   end
   local r = reqs[i % #reqs + 1]
   i = i + step
   return r
end

local function finish()
   if finished then return end
   finished = true
   out:close()
   common.mark_done(prefix, id)
   wrk.thread:stop()
end

function response(status, headers, body)
   if finished then return end
   if status ~= 200 then
      failed = failed + 1
      if first_error == "" then first_error = status .. " " .. body:sub(1, 300) end
      if failed >= 100 then finish() end
      return
   end
   local rid = body:match('"request_id":"([^"]+)"')
   local idx = body:match('"id":"cmpl%-(%d+)%-')
   if not rid or not idx then
      parse_failed = parse_failed + 1
      return
   end
   out:write(rid, "\t", idx, "\n")
   captured = captured + 1
   if captured >= quota then finish() end
end

function done(summary, latency, requests)
   common.done(summary, latency, {"captured", "failed", "parse_failed"}, {"first_error"})
end
