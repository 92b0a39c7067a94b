-- POST /v1/feedback through pre-generated batches, each sent at most once: every thread walks
-- its own file (PREFIX.<thread>.jsonl, one batch a line) and, when its batches run out, parks
-- its connections and stops once every batch sent has been answered. Answers are checked:
-- recorded and duplicate counts are summed from the bodies, anything but 200 is counted.
-- wrk ... -s feedback.lua URL -- PREFIX EVENTS_PER_BATCH
package.path = debug.getinfo(1, "S").source:match("^@(.*/)") .. "?.lua;" .. package.path
local common = require("common")

local reqs, i, prefix
sent, answered, ok, non200, recorded, duplicates, bad_body, exhausted, first_error = 0, 0, 0, 0, 0, 0, 0, 0, ""
local finished = false

setup = common.setup

function init(args)
   prefix = args[1]
   reqs = common.load_requests(prefix .. "." .. id .. ".jsonl", "POST", "/v1/feedback")
   batches = #reqs
   i = 0
   -- wrk calls thread 0's request() once right after init to check the request it builds;
   -- that one is never sent, so it must not use up a batch.
   verifying = (id == 0)
end

local function maybe_finish()
   if exhausted == 1 and answered >= sent and not finished then
      finished = true
      common.mark_done(prefix, id)
      wrk.thread:stop()
   end
end

function request()
   if verifying then
      verifying = false
      return reqs[1] or wrk.format("POST", "/v1/feedback", wrk.headers, "{}")
   end
   if i >= #reqs then
      exhausted = 1
      maybe_finish()
      return "" -- parks the connection: a batch is never sent twice
   end
   i = i + 1
   sent = sent + 1
   return reqs[i]
end

function response(status, headers, body)
   answered = answered + 1
   if status == 200 then
      ok = ok + 1
      local r = tonumber(body:match('"recorded":(%d+)'))
      local d = tonumber(body:match('"duplicates":(%d+)'))
      if r and d then
         recorded = recorded + r
         duplicates = duplicates + d
      else
         bad_body = bad_body + 1
      end
   else
      non200 = non200 + 1
      if first_error == "" then first_error = status .. " " .. body:sub(1, 300) end
   end
   maybe_finish()
end

function done(summary, latency, requests)
   common.done(summary, latency,
      {"batches", "sent", "answered", "ok", "non200", "recorded", "duplicates", "bad_body", "exhausted"},
      {"first_error"})
end
