-- S3: list pages of 50 on the keyset chain (after = 0, 50, 100, ...), as a client paging through.
local pages = math.floor(tonumber(os.getenv("BENCH_IDS") or "10000") / 50)
request = function()
  return wrk.format("GET", "/data?limit=50&after=" .. (50 * math.random(0, pages - 1)))
end
