-- POST pre-generated Segment batches to /v1/batch, rotating through them (see bench/ingest.py).
--
-- BENCH_BODIES names a file with one JSON body per line. Each messageId in it holds the marker @@N@@,
-- replaced on every request by "<thread>.<request number>": every event wrk sends has a messageId never
-- sent before, so the processor (when it runs) applies each one instead of skipping duplicates.
-- BENCH_AUTH is the whole Authorization header (HTTP Basic with the write key as user name).

local MARK = "@@N@@"
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

wrk.method = "POST"
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
  local parts = bodies[(sent - 1) % #bodies + 1]
  return wrk.format(nil, nil, nil, table.concat(parts, id .. "." .. sent))
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
