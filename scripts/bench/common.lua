-- Shared by every scenario script (scripts/bench.sh prepends it): ids, bodies, and a machine-
-- readable summary line. Knobs come from the environment: BENCH_IDS (ids 1..N that exist),
-- BENCH_HOT (size of the hot set, ids 1..HOT), BENCH_RUN (unique prefix for POST keys).
local ids = tonumber(os.getenv("BENCH_IDS") or "10000")
local hot = tonumber(os.getenv("BENCH_HOT") or "100")
local run = os.getenv("BENCH_RUN") or tostring(os.time())
local counter = 0

math.randomseed(os.time())

function hot_id() return math.random(1, hot) end
function any_id() return math.random(1, ids) end

function value_json(n)
  return string.format('{"n":%d,"name":"record %d","tags":["alpha","beta","gamma"],"ok":true}', n, n)
end

function next_key()
  counter = counter + 1
  return string.format("bench:%s:%09d", run, counter)
end

json_headers = { ["Content-Type"] = "application/json" }

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d mean_us=%.1f " ..
    "err_connect=%d err_read=%d err_write=%d err_timeout=%d non2xx=%d bytes=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
    e.connect, e.read, e.write, e.timeout, e.status, summary.bytes))
end
