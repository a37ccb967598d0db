"""llama.cpp's prefill and decode speed on a GGUF file (the reference side of examples/bench.rs).

usage: llama_cpp_bench.py MODEL THREADS DECODE_TOKENS PROMPT_IDS(comma-separated)
prints: "<prefill tok/s> <decode tok/s>" (best of three runs, after a warm-up)
"""
import sys
import time

import llama_cpp
import numpy as np


def main():
    model, threads, n_decode, ids = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    prompt = [int(x) for x in ids.split(",")]
    llm = llama_cpp.Llama(model_path=model, n_ctx=2048, n_batch=512, n_threads=threads,
                          n_threads_batch=threads, verbose=False)

    def run(n):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)
        t1 = time.perf_counter()
        for _ in range(n):
            tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            llm.eval([tok])
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1

    run(8)
    best = (float("inf"), float("inf"))
    for _ in range(3):
        p, d = run(n_decode)
        best = (min(best[0], p), min(best[1], d))
    print(f"{len(prompt) / best[0]:.3f} {n_decode / best[1]:.3f}")


if __name__ == "__main__":
    main()
