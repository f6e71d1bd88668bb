-- wrk script of `pushcascade bench gateway`: POST /read/<token> with real signed read tokens.
--
-- wrk -t T -s acks.lua <url> -- <tokens file | healthz> <T> [limit]
-- Each thread takes every n-th token of the file (n = threads), so no token is sent twice; a
-- thread whose share is used up (or that sent `limit / threads`) asks for /healthz instead,
-- so the acks sent are exactly the tokens used. done() prints one JSON line: requests,
-- acks recorded (a 200 whose body says "recorded":true), refusals, latency percentiles (us).

local threads = {}

function setup(thread)
   thread:set("id", #threads)
   table.insert(threads, thread)
end

function init(args)
   local path, count, limit = args[1], tonumber(args[2]), tonumber(args[3] or "0")
   tokens, next_token, recorded, refused, healthz = {}, 1, 0, 0, 0
   -- wrk calls thread 0's request() once after init to check it, and sends nothing of it
   verifying = id == 0
   if path == "healthz" then return end
   local i = 0
   for line in io.lines(path) do
      if i % count == id then table.insert(tokens, line) end
      i = i + 1
   end
   if limit > 0 then
      local share = math.floor(limit / count)
      if id < limit % count then share = share + 1 end
      while #tokens > share do table.remove(tokens) end
   end
end

function request()
   if verifying then
      verifying = false
      return wrk.format("GET", "/healthz")
   end
   local token = tokens[next_token]
   if token == nil then
      return wrk.format("GET", "/healthz")
   end
   next_token = next_token + 1
   return wrk.format("POST", "/read/" .. token)
end

function response(status, headers, body)
   if status == 200 and string.find(body, '"recorded":true', 1, true) then
      recorded = recorded + 1
   elseif status == 200 and string.find(body, '"status":"ok"', 1, true) then
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
      sent = sent + t:get("next_token") - 1
   end
   io.write(string.format(
      '{"requests":%d,"seconds":%.3f,"sent":%d,"recorded":%d,"refused":%d,"healthz":%d,' ..
      '"errors":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
      summary.requests, summary.duration / 1e6, sent, rec, ref, hz,
      summary.errors.connect + summary.errors.read + summary.errors.write +
      summary.errors.status + summary.errors.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
