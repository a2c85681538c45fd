-- S5 (and the soak): 95 % GET / 5 % PUT on the hot set.
request = function()
  local id = hot_id()
  if math.random(1, 100) <= 5 then
    local body = '{"value":' .. value_json(math.random(1, 1000000)) .. '}'
    return wrk.format("PUT", "/data/" .. id, json_headers, body)
  end
  return wrk.format("GET", "/data/" .. id)
end
