-- POST pre-generated Segment batches to /v1/batch, rotating through them (see bench/ingest.py).
--
-- BENCH_BODIES names a file with one JSON body per line. Each messageId in it holds the marker @@N@@,
-- replaced on every request by "<run>.<thread>.<request number>" (BENCH_RUN names the wrk run, so a
-- measured run does not repeat its warm-up's ids): every event wrk sends has a messageId never sent
-- before, so the processor (when it runs) applies each one instead of skipping duplicates.
-- BENCH_AUTH is the whole Authorization header (HTTP Basic with the write key as user name).
-- BENCH_RATE, when set, paces each wrk thread at that many requests per second (see delay() below).
-- BENCH_PATH and BENCH_METHOD (default POST) send the bodies elsewhere; GET sends none (bench/decide.py).

local MARK = "@@N@@"
local RUN = os.getenv("BENCH_RUN") or "0"
local bodies = {}
local threads = {}

local function split(s, sep)
  local parts, start = {}, 1
  while true do
    local i, j = string.find(s, sep, start, true)
    if not i then
      parts[#parts + 1] = string.sub(s, start)
      return parts
    end
    parts[#parts + 1] = string.sub(s, start, i - 1)
    start = j + 1
  end
end

for line in io.lines(os.getenv("BENCH_BODIES")) do
  if #line > 0 then
    bodies[#bodies + 1] = split(line, MARK)
  end
end

wrk.method = os.getenv("BENCH_METHOD") or "POST"
wrk.path = os.getenv("BENCH_PATH") or "/v1/batch"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = os.getenv("BENCH_AUTH")

function setup(thread)
  thread:set("id", #threads + 1)
  threads[#threads + 1] = thread
end

function init(args)
  sent = 0
end

function request()
  sent = sent + 1
  if wrk.method == "GET" then
    return wrk.format(nil, nil, nil, nil)
  end
  local parts = bodies[(sent - 1) % #bodies + 1]
  return wrk.format(nil, nil, nil, table.concat(parts, RUN .. "." .. id .. "." .. sent))
end

-- Pacing. wrk calls delay() when a connection is ready to send (after its previous response) and waits
-- that many milliseconds. Each call claims the next slot of a fixed schedule (one every 1000 / rate ms
-- from the first call), so the thread sends at the rate as long as it has idle connections, whatever
-- the latency; a slot already past is sent at once, so a stall is followed by a catch-up burst. wrk then
-- times each request from its write to its response: the time a request waited for a free connection
-- is not counted (no correction for coordinated omission against the schedule, unlike wrk2's -R; wrk's
-- own after-the-fact correction only adds samples for responses slower than twice the mean interval
-- between requests on one connection).
local rate = tonumber(os.getenv("BENCH_RATE") or "")
if rate and rate > 0 then
  local ffi = require("ffi")
  ffi.cdef([[
    typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
    int clock_gettime(int clk_id, bench_timespec *tp);
  ]])
  local CLOCK_MONOTONIC = 1
  local now_ts = ffi.new("bench_timespec")
  local interval = 1000 / rate
  local next_slot = nil

  local function now_ms()
    ffi.C.clock_gettime(CLOCK_MONOTONIC, now_ts)
    return tonumber(now_ts.tv_sec) * 1000 + tonumber(now_ts.tv_nsec) / 1e6
  end

  function delay()
    local now = now_ms()
    next_slot = next_slot or now
    local slot = next_slot
    next_slot = next_slot + interval
    if slot <= now then
      return 0
    end
    return math.floor(slot - now + 0.5)
  end
end

function done(summary, latency, requests)
  local total_sent = 0
  for _, thread in ipairs(threads) do
    total_sent = total_sent + thread:get("sent")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"duration_us": %d, "requests": %d, "sent": %d, "status": %d, "connect": %d, "read": %d, '
      .. '"write": %d, "timeout": %d, "p50": %.1f, "p99": %.1f, "p999": %.1f, "max": %.1f}\n',
    summary.duration, summary.requests, total_sent, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
