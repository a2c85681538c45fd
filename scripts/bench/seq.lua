-- Profiling (scripts/bench/profile.sh) and S7: walks ids in order, one request each, starting at
-- BENCH_FROM. BENCH_METHOD=GET reads each id once (the miss profile: every id's entry was just
-- invalidated); PUT replaces each id's value once (the write profile, and S7 when BENCH_FROM is random).
local next_id = tonumber(os.getenv("BENCH_FROM") or "1")
local method = os.getenv("BENCH_METHOD") or "GET"

request = function()
  local id = next_id
  next_id = next_id + 1
  if next_id > ids then next_id = 1 end
  if method == "PUT" then
    local body = '{"value":' .. value_json(math.random(1, 1000000)) .. '}'
    return wrk.format("PUT", "/data/" .. id, json_headers, body)
  end
  return wrk.format("GET", "/data/" .. id)
end
