-- POST /v1/quotes: a read that prices a job (no key needed).
wrk.method = "POST"
wrk.path = "/v1/quotes"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"units":"2.5","model":"llama3.2","region":"us-west"}'
