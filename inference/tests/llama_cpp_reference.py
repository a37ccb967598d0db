"""The llama.cpp side of tests/reference.rs: tokenization and greedy decoding through
llama-cpp-python on the same GGUF file.

usage: llama_cpp_reference.py < request.json
request: {"model": PATH, "texts": [str], "prompts": [str], "n": int}
prints:  {"tokens": [[id]] (each text tokenized with add_bos=False, special=True),
          "greedy": [[id]] (each prompt tokenized the same way, then up to n tokens of
                            temperature-0 / top-k-1 decoding, stopping at end of generation)}
"""
import json
import sys

import llama_cpp


def main():
    req = json.load(sys.stdin)
    vocab = llama_cpp.Llama(model_path=req["model"], vocab_only=True, verbose=False)
    tokens = [vocab.tokenize(t.encode("utf-8"), add_bos=False, special=True) for t in req["texts"]]
    del vocab
    greedy = []
    if req["prompts"]:
        llm = llama_cpp.Llama(model_path=req["model"], n_ctx=1024, n_threads=2, seed=0, verbose=False)
        for prompt in req["prompts"]:
            ids = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
            out = []
            llm.reset()
            for tok in llm.generate(ids, temp=0.0, top_k=1, top_p=1.0, repeat_penalty=1.0):
                if llama_cpp.llama_vocab_is_eog(llama_cpp.llama_model_get_vocab(llm.model), tok):
                    break
                out.append(tok)
                if len(out) >= req["n"]:
                    break
            greedy.append(out)
    json.dump({"tokens": tokens, "greedy": greedy}, sys.stdout)


if __name__ == "__main__":
    main()
