-- GET /v1/listings: a region's GPU listings, one page.
wrk.method = "GET"
wrk.path = "/v1/listings?region=us-west&limit=20"
