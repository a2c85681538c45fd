-- S4: POST /data with a unique key per request.
request = function()
  local body = string.format('{"key":"%s","value":%s}', next_key(), value_json(math.random(1, 1000000)))
  return wrk.format("POST", "/data", json_headers, body)
end
