-- POST /v1/jobs: each request a new job (a fresh Idempotency-Key per request and thread).
-- AITBC_KEY (the client's API key) and AITBC_GPU (the listing) come from the environment.
local counter = 0
local thread_id = 0
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  thread_id = id
end

request = function()
  counter = counter + 1
  local body = '{"units":"1","gpu_id":"' .. os.getenv("AITBC_GPU") .. '","spec":{"kind":"vector_add","n":1024,"seed":' .. counter .. '}}'
  local headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. os.getenv("AITBC_KEY"),
    ["Idempotency-Key"] = "load-" .. thread_id .. "-" .. counter .. "-" .. os.time(),
  }
  return wrk.format("POST", "/v1/jobs", headers, body)
end
