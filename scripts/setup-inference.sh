#!/usr/bin/env bash
# Prepares what the inference engine's tests and bench need, idempotently (fast on a second run):
#  1. Python packages in a virtual environment (default .venv, the one scripts/test.sh uses):
#     gguf (pinned) and numpy for the tiny test model; llama-cpp-python, the llama.cpp reference,
#     installed from a wheel built once and cached in .cache/wheels (building llama.cpp from the
#     sdist takes minutes on 2 cores; GGML_NATIVE=OFF with AVX2/FMA/F16C so the wheel runs on any
#     x86-64 CI machine with AVX2, like this one);
#     llama-cpp-python's server dependencies (the upstream models' tests);
#  2. the default model through scripts/models.sh.
# Prints the environment the tests read; `eval "$(scripts/setup-inference.sh)"` applies it.
#
# Usage: scripts/setup-inference.sh [--venv PATH]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

venv="$root/.venv"
while [ $# -gt 0 ]; do
    case "$1" in
        --venv) venv=$(realpath -m "$2"); shift 2 ;;
        *) echo "usage: $0 [--venv PATH]" >&2; exit 2 ;;
    esac
done

gguf_version="0.17.1"
llama_cpp_version="0.3.36"
# Outside the checkout, so a fresh clone (CI) on this machine reuses the built wheel.
wheels="${AITBC_CACHE_DIR:-$HOME/.cache/aitbc}/wheels"
py="$venv/bin/python"

[ -x "$py" ] || python3 -m venv "$venv"
pip=("$py" -m pip install --quiet --disable-pip-version-check)
if ! "$py" -c "import gguf, numpy, sys; sys.exit(gguf.__version__ != '$gguf_version' if hasattr(gguf, '__version__') else 0)" 2>/dev/null; then
    echo "setup-inference: installing gguf==$gguf_version numpy into $venv" >&2
    "${pip[@]}" "gguf==$gguf_version" numpy >&2
fi
if ! "$py" -c "import llama_cpp" 2>/dev/null; then
    wheel=$(ls "$wheels"/llama_cpp_python-"$llama_cpp_version"-*.whl 2>/dev/null | head -1 || true)
    if [ -z "$wheel" ]; then
        echo "setup-inference: building llama-cpp-python $llama_cpp_version (llama.cpp from source, several minutes)" >&2
        mkdir -p "$wheels"
        CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
            CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
            "$py" -m pip wheel --no-deps --disable-pip-version-check --quiet -w "$wheels" "llama-cpp-python==$llama_cpp_version" >&2
        wheel=$(ls "$wheels"/llama_cpp_python-"$llama_cpp_version"-*.whl | head -1)
    fi
    # Its runtime dependencies (numpy, typing-extensions, diskcache, jinja2) from PyPI.
    "${pip[@]}" "$wheel" >&2
fi
# llama-cpp-python's OpenAI-compatible server (its `server` extra), which the worker's upstream
# models are tested against (worker/tests/upstream.rs).
if ! "$py" -c "import llama_cpp.server.app, uvicorn" 2>/dev/null; then
    echo "setup-inference: installing llama-cpp-python's server dependencies into $venv" >&2
    "${pip[@]}" "uvicorn==0.55.0" "fastapi==0.165.0" "pydantic-settings==2.16.3" "sse-starlette==3.7.1" "starlette-context==0.3.6" "PyYAML>=5.1" >&2
fi
model=$(PYTHON="$py" scripts/models.sh)
echo "export AITBC_TEST_PYTHON=$py"
echo "export AITBC_TEST_MODEL=$model"
