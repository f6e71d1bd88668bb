-- wrk script of the HTTP benchmarks: replays prepared requests, each once, then /healthz.
--
-- wrk -t T -s replay.lua <url> -- <requests file | idle> <T> [limit] [mark] [idle path]
-- The file holds one request a line, "METHOD<TAB>PATH<TAB>BODY" (BODY may be empty): real
-- signed read tokens for the gateway, signed vendor calls for the provider simulator. Each
-- thread takes every T-th line, so no request is sent twice; a thread whose share is used up
-- (or that sent `limit / T`) asks for the idle path (/healthz) instead, so the requests sent
-- are exactly the lines used. A 2xx whose body holds the mark counts as recorded, another 200
-- as idle ("healthz"), anything else as refused; "idle" instead of a file sends only the idle
-- path (the server's own ceiling). done() prints one
-- JSON line: requests, sent, recorded, refused, healthz, errors, latency percentiles (us).

local threads = {}

function setup(thread)
   thread:set("id", #threads)
   table.insert(threads, thread)
end

function init(args)
   local path, count, limit = args[1], tonumber(args[2]), tonumber(args[3] or "0")
   mark = args[4] or '"recorded":true'
   idle = args[5] or "/healthz"
   lines, next_line, recorded, refused, healthz = {}, 1, 0, 0, 0
   -- wrk calls thread 0's request() once after init to check it, and sends nothing of it
   verifying = id == 0
   if path == "idle" then return end
   local i = 0
   for line in io.lines(path) do
      if i % count == id then table.insert(lines, line) end
      i = i + 1
   end
   if limit > 0 then
      local share = math.floor(limit / count)
      if id < limit % count then share = share + 1 end
      while #lines > share do table.remove(lines) end
   end
end

function request()
   if verifying then
      verifying = false
      return wrk.format("GET", idle)
   end
   local line = lines[next_line]
   if line == nil then
      return wrk.format("GET", idle)
   end
   next_line = next_line + 1
   local method, path, body = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
   if body == "" then body = nil end
   return wrk.format(method, path, nil, body)
end

function response(status, headers, body)
   if status >= 200 and status < 300 and string.find(body, mark, 1, true) then
      recorded = recorded + 1
   elseif status == 200 then
      healthz = healthz + 1
   else
      refused = refused + 1
   end
end

function done(summary, latency, requests)
   local rec, ref, hz, sent = 0, 0, 0, 0
   for _, t in ipairs(threads) do
      rec = rec + t:get("recorded")
      ref = ref + t:get("refused")
      hz = hz + t:get("healthz")
      sent = sent + t:get("next_line") - 1
   end
   io.write(string.format(
      '{"requests":%d,"seconds":%.3f,"sent":%d,"recorded":%d,"refused":%d,"healthz":%d,' ..
      '"errors":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
      summary.requests, summary.duration / 1e6, sent, rec, ref, hz,
      summary.errors.connect + summary.errors.read + summary.errors.write +
      summary.errors.status + summary.errors.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
