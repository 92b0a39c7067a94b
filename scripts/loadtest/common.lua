-- Shared by the wrk scripts of scripts/loadtest.sh: thread bookkeeping, loading pre-generated
-- bodies, and a one-line JSON summary ("LOADTEST_JSON {...}") that the shell script parses
-- instead of wrk's human-readable text.

local common = {}

local threads = {}
local next_id = 0

-- wrk calls setup(thread) in the main Lua state once per thread, before the thread's init.
function common.setup(thread)
   thread:set("id", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

-- Reads a file of one request body a line into a list of ready-made HTTP requests.
function common.load_requests(path, method, url_path)
   local reqs = {}
   wrk.headers["Content-Type"] = "application/json"
   for line in io.lines(path) do
      if #line > 0 then
         reqs[#reqs + 1] = wrk.format(method, url_path, wrk.headers, line)
      end
   end
   return reqs
end

local function encode(v)
   local t = type(v)
   if t == "number" then
      if v ~= v or v == math.huge or v == -math.huge then return "null" end
      if v == math.floor(v) and math.abs(v) < 2^53 then return string.format("%d", v) end
      return string.format("%.6g", v)
   elseif t == "string" then
      return '"' .. v:gsub('[%c"\\]', function(c)
         return string.format("\\u%04x", c:byte())
      end) .. '"'
   elseif t == "boolean" then
      return tostring(v)
   elseif t == "table" then
      local parts = {}
      for k, x in pairs(v) do
         parts[#parts + 1] = encode(tostring(k)) .. ":" .. encode(x)
      end
      table.sort(parts)
      return "{" .. table.concat(parts, ",") .. "}"
   end
   return "null"
end

-- Sums numeric thread globals named in `counters` and keeps the first non-empty `samples`.
local function gather(counters, samples)
   local out = {}
   for _, name in ipairs(counters) do out[name] = 0 end
   for _, thread in ipairs(threads) do
      for _, name in ipairs(counters) do
         out[name] = out[name] + (tonumber(thread:get(name)) or 0)
      end
      for _, name in ipairs(samples or {}) do
         local s = thread:get(name)
         if out[name] == nil and s ~= nil and s ~= "" then out[name] = s end
      end
   end
   return out
end

-- Prints wrk's totals, latency percentiles (microseconds) and the scripts' own counters.
function common.done(summary, latency, counters, samples)
   local e = summary.errors
   local r = {
      duration_us = summary.duration,
      requests = summary.requests,
      bytes = summary.bytes,
      rps = summary.requests / (summary.duration / 1e6),
      errors_connect = e.connect,
      errors_read = e.read,
      errors_write = e.write,
      errors_timeout = e.timeout,
      errors_status = e.status,
      latency_mean_us = latency.mean,
      latency_max_us = latency.max,
      latency_p50_us = latency:percentile(50),
      latency_p90_us = latency:percentile(90),
      latency_p99_us = latency:percentile(99),
      latency_p999_us = latency:percentile(99.9),
   }
   if counters then
      for k, v in pairs(gather(counters, samples)) do r[k] = v end
   end
   io.write("LOADTEST_JSON " .. encode(r) .. "\n")
end

-- A marker file that tells the shell script this thread has finished its work, so it can
-- end wrk (SIGINT) instead of waiting for the whole -d.
function common.mark_done(prefix, id)
   local f = io.open(prefix .. "." .. id .. ".done", "w")
   if f then f:close() end
end

return common
