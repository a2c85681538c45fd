-- S1 / S6 / ceilings: GET /data/{id} over the hot set (ids 1..BENCH_HOT).
request = function()
  return wrk.format("GET", "/data/" .. hot_id())
end
