-- wrk script for benchmarks/web_load.py: one scenario per run, chosen by environment
-- variables (read when each of wrk's Lua states loads this file):
--
--   WEBLOAD_MODE     get | signup | unsubscribe
--   WEBLOAD_THREADS  wrk's -t (so each thread takes its own share of the token list)
--   WEBLOAD_HEADERS  extra request headers, "Name: value" separated by "\n"
--   signup:       WEBLOAD_COOKIE, WEBLOAD_CSRF (one cookie + token pair, reused),
--                 WEBLOAD_EMAIL_PREFIX (unique per run), WEBLOAD_FORM (the other fields)
--   unsubscribe:  WEBLOAD_TOKENS (a file of one-click unsubscribe paths, one a line)
--   WEBLOAD_SLOW_MS  answers slower than this count as timeouts (done() counts them)
--   WEBLOAD_THINK_MS  mean think time per client (exponential); unset = closed loop
--                     (`web_load.py --pacer wrk` only: web_pacer.py says why it is not the default)
--
-- Each thread counts what it sent and every status it got; done() prints one line
-- "WEBLOAD_JSON {...}" with wrk's summary, errors, latency percentiles and those counts.

local mode = os.getenv("WEBLOAD_MODE") or "get"
local threads_total = tonumber(os.getenv("WEBLOAD_THREADS") or "1")
local think_ms = tonumber(os.getenv("WEBLOAD_THINK_MS") or "")

local function split_lines(text)
   local out = {}
   for line in string.gmatch(text or "", "[^\n]+") do
      out[#out + 1] = line
   end
   return out
end

for _, line in ipairs(split_lines(os.getenv("WEBLOAD_HEADERS"))) do
   local name, value = string.match(line, "^([^:]+):%s*(.*)$")
   if name then
      wrk.headers[name] = value
   end
end

-- --- setup (main Lua state) -------------------------------------------------------

local threads = {}

function setup(thread)
   thread:set("thread_index", #threads)
   threads[#threads + 1] = thread
end

-- --- per thread -------------------------------------------------------------------

thread_index = 0
sent = 0
statuses = {}
exhausted = 0

-- (wrk calls thread 1's request() once before the run to check the request it makes:
-- that one counts as sent and uses up a path, but is never sent.)
local paths = {}
local next_path = 1
local counter = 0
local form_rest = os.getenv("WEBLOAD_FORM") or ""
local email_prefix = os.getenv("WEBLOAD_EMAIL_PREFIX") or "webload"
local csrf = os.getenv("WEBLOAD_CSRF") or ""
local one_click_body = "List-Unsubscribe=One-Click"

local function urlencode(s)
   return (string.gsub(s, "[^%w%-%._~]", function(c)
      return string.format("%%%02X", string.byte(c))
   end))
end

function init(args)
   if mode == "signup" then
      wrk.method = "POST"
      wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
      wrk.headers["Cookie"] = os.getenv("WEBLOAD_COOKIE")
   elseif mode == "unsubscribe" then
      wrk.method = "POST"
      wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
      local file = assert(io.open(os.getenv("WEBLOAD_TOKENS"), "r"))
      local n = 0
      for line in file:lines() do
         if n % threads_total == thread_index then
            paths[#paths + 1] = line
         end
         n = n + 1
      end
      file:close()
   end
   math.randomseed(os.time() + thread_index * 7919)
end

if mode == "signup" then
   function request()
      counter = counter + 1
      sent = sent + 1
      local email = email_prefix .. "-t" .. thread_index .. "-" .. counter .. "@example.com"
      local body = "csrfmiddlewaretoken=" .. csrf .. "&email=" .. urlencode(email) .. "&" .. form_rest
      return wrk.format(nil, nil, nil, body)
   end
elseif mode == "unsubscribe" then
   function request()
      if next_path > #paths then
         -- Out of distinct subscribers: stop this thread rather than post a token twice.
         exhausted = 1
         wrk.thread:stop()
         return wrk.format("GET", "/healthz")
      end
      local path = paths[next_path]
      next_path = next_path + 1
      sent = sent + 1
      return wrk.format(nil, path, nil, one_click_body)
   end
else
   function request()
      sent = sent + 1
      return wrk.format(nil, nil)
   end
end

function response(status, headers, body)
   local key = tostring(status)
   statuses[key] = (statuses[key] or 0) + 1
end

if think_ms and think_ms > 0 then
   -- Each client waits an exponentially distributed time (mean think_ms) before each
   -- request: 100 clients at a set pace instead of as fast as the server answers.
   function delay()
      return math.floor(-think_ms * math.log(1 - math.random()))
   end
end

-- --- done (main Lua state) ----------------------------------------------------------

local function json_value(v)
   if type(v) == "table" then
      local parts = {}
      for k, x in pairs(v) do
         parts[#parts + 1] = string.format("%q:%s", tostring(k), json_value(x))
      end
      return "{" .. table.concat(parts, ",") .. "}"
   elseif type(v) == "string" then
      return string.format("%q", v)
   elseif v == nil or v ~= v then
      return "null"
   end
   return string.format("%.17g", v)
end

-- Responses slower than limit_us: wrk keeps every latency up to its --timeout, and
-- its own timeout counter also counts idle connections (a client thinking), so the
-- slow answers are counted here from the histogram, by bisecting the percentiles.
local function count_slower(latency, total, limit_us)
   if total == 0 or latency.max <= limit_us then
      return 0
   end
   local lo, hi = 0.0, 100.0
   for _ = 1, 40 do
      local mid = (lo + hi) / 2
      if latency:percentile(mid) > limit_us then hi = mid else lo = mid end
   end
   return math.max(1, math.floor((100 - hi) / 100 * total + 0.5))
end

function done(summary, latency, requests)
   local slow_ms = tonumber(os.getenv("WEBLOAD_SLOW_MS") or "5000")
   local out = {
      slow = count_slower(latency, summary.requests, slow_ms * 1000), slow_ms = slow_ms,
      duration_us = summary.duration, requests = summary.requests, bytes = summary.bytes,
      errors = summary.errors,
      latency_us = {
         min = latency.min, max = latency.max, mean = latency.mean, stdev = latency.stdev,
         p50 = latency:percentile(50), p75 = latency:percentile(75),
         p90 = latency:percentile(90), p99 = latency:percentile(99),
         p999 = latency:percentile(99.9),
      },
      threads = {},
   }
   for i, thread in ipairs(threads) do
      out.threads[tostring(i)] = {
         sent = thread:get("sent"), statuses = thread:get("statuses"),
         exhausted = thread:get("exhausted"),
      }
   end
   io.write("WEBLOAD_JSON " .. json_value(out) .. "\n")
end
