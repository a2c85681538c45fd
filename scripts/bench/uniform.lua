-- S2: GET /data/{id} uniform over all seeded ids.
request = function()
  return wrk.format("GET", "/data/" .. any_id())
end
