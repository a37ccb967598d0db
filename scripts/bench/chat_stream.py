"""A streamed chat through the OpenAI-compatible API, timed as its client sees it: time to the
first piece of text and time per token after it (median of RUNS, after one warm-up).
Usage: chat_stream.py API SYSTEM QUESTION MAX_TOKENS RUNS; prints one JSON line."""

import json
import statistics
import sys
import time
import urllib.request

import openai

RUNS_MAX = 50


def funded_client(api: str) -> str:
    def call(path: str, body: dict, key: str | None = None) -> dict:
        headers = {"content-type": "application/json"}
        if key:
            headers["authorization"] = f"Bearer {key}"
        req = urllib.request.Request(api + path, data=json.dumps(body).encode(), headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)

    opened = call("/v1/accounts", {"role": "client"})
    call(f"/v1/accounts/{opened['address']}/deposits", {"amount": "100"}, opened["api_key"])
    return opened["api_key"]


def main() -> None:
    api, system, question, max_tokens, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    assert 1 <= runs <= RUNS_MAX, f"RUNS must be 1..={RUNS_MAX}"
    client = openai.OpenAI(base_url=f"{api}/v1", api_key=funded_client(api), max_retries=0, timeout=120)
    messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    ttft, per_token, tokens = [], [], 0
    for run in range(runs + 1):
        start = time.perf_counter()
        first = last = None
        usage = None
        stream = client.chat.completions.create(
            model="smollm2:135m", messages=messages, temperature=0, max_tokens=max_tokens, stream=True,
            stream_options={"include_usage": True},
        )
        for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            if chunk.choices and chunk.choices[0].delta.content:
                now = time.perf_counter()
                first = first or now
                last = now
        assert first is not None and usage is not None
        if run == 0:
            continue  # the warm-up: first connection, first job of the listing
        ttft.append((first - start) * 1e3)
        if usage.completion_tokens > 1:
            per_token.append((last - first) * 1e3 / (usage.completion_tokens - 1))
        tokens = usage.completion_tokens
    print(json.dumps({"ttft_ms": round(statistics.median(ttft), 2), "per_token_ms": round(statistics.median(per_token), 3) if per_token else 0.0, "completion_tokens": tokens}))


if __name__ == "__main__":
    main()
