#!/usr/bin/env bash
# Builds every Lambda of aitbc as a `bootstrap` zip for the provided.al2023 runtime:
#   target/lambda/<arch>/<binary>.zip   (the S3 keys the template expects under ArtifactPrefix)
#
#   infra/build.sh [arm64|x86_64|both]      (default arm64, the template's default Architecture)
#
# How: cargo-lambda (from PyPI, with the Zig toolchain it ships as `ziglang`) cross-compiles and
# links against glibc 2.17 symbols, well below Amazon Linux 2023's 2.34, with no system cross
# linker. It installs into target/lambda-tools/venv on first use. The Rust standard library for
# aarch64 comes from `rustup target add`. If either cannot be had here, arm64 is impossible: the
# script says so and stops (build x86_64 instead and deploy with Architecture=x86_64).
#
# Profile `lambda` (workspace Cargo.toml): opt-level "s", thin LTO, one codegen unit, stripped.
# The binaries:
#   aitbc-registry aitbc-pricing aitbc-jobs aitbc-receipts aitbc-accounts aitbc-chat  (functions, feature lambda)
#   aitbc-scheduler-lambda                                                  (scheduler, feature lambda)
# The scheduler's is skipped, with a message, when scheduler/Cargo.toml does not declare it yet.
#
# Checks on every artifact: at most ZIP_BYTES_MAX bytes zipped (our cold-start budget; Lambda
# itself takes 50 MB zipped, 250 MB unzipped) and no glibc symbol newer than GLIBC_MAX.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

ZIP_BYTES_MAX=$((8 * 1024 * 1024))
GLIBC_MAX="2.34"     # Amazon Linux 2023, the provided.al2023 runtime
FUNCTIONS_BINS=(aitbc-registry aitbc-pricing aitbc-jobs aitbc-receipts aitbc-accounts aitbc-chat)
SCHEDULER_BIN=aitbc-scheduler-lambda

arch_arg=${1:-arm64}
case "$arch_arg" in
    arm64) archs=(arm64) ;;
    x86_64) archs=(x86_64) ;;
    both) archs=(arm64 x86_64) ;;
    *) echo "usage: infra/build.sh [arm64|x86_64|both]" >&2; exit 2 ;;
esac

tools="$root/target/lambda-tools/venv"
if [ ! -x "$tools/bin/cargo-lambda" ]; then
    echo "build.sh: installing cargo-lambda (and ziglang) from PyPI into $tools"
    python3 -m venv "$tools"
    "$tools/bin/python" -m pip install --quiet --disable-pip-version-check "cargo-lambda>=1.8,<2"
fi
export PATH="$tools/bin:$PATH"

bins=()
for b in "${FUNCTIONS_BINS[@]}"; do bins+=(--bin "$b"); done
features="aitbc-functions/lambda"
packages=(-p aitbc-functions)
if grep -q "name = \"$SCHEDULER_BIN\"" scheduler/Cargo.toml 2>/dev/null; then
    bins+=(--bin "$SCHEDULER_BIN")
    features="$features,aitbc-scheduler/lambda"
    packages+=(-p aitbc-scheduler)
    all_bins=("${FUNCTIONS_BINS[@]}" "$SCHEDULER_BIN")
else
    echo "build.sh: SKIPPED $SCHEDULER_BIN: scheduler/Cargo.toml declares no such binary yet (the template's SchedulerFunction needs it)" >&2
    all_bins=("${FUNCTIONS_BINS[@]}")
fi

for arch in "${archs[@]}"; do
    case "$arch" in
        arm64) triple=aarch64-unknown-linux-gnu; flag=--arm64 ;;
        x86_64) triple=x86_64-unknown-linux-gnu; flag=--x86-64 ;;
    esac
    if ! rustup target list --installed 2>/dev/null | grep -qx "$triple"; then
        echo "build.sh: adding the Rust standard library for $triple"
        if ! rustup target add "$triple"; then
            echo "build.sh: cannot build $arch here: rustup could not add $triple. Build x86_64 and deploy with Architecture=x86_64." >&2
            exit 1
        fi
    fi
    staging="$root/target/lambda/$arch/build"
    echo "build.sh: building ${all_bins[*]} for $arch"
    # --disable-optimizations: the `lambda` profile alone decides optimization (no cargo-lambda
    # defaults layered on top of it).
    cargo lambda build --profile lambda "$flag" --disable-optimizations --locked \
        "${packages[@]}" --features "$features" "${bins[@]}" \
        --output-format zip --lambda-dir "$staging"
    for b in "${all_bins[@]}"; do
        zip="$root/target/lambda/$arch/$b.zip"
        cp "$staging/$b/bootstrap.zip" "$zip"
        size=$(stat -c %s "$zip")
        unzipped=$(unzip -Z -t "$zip" | awk '{print $3}')
        # The newest glibc symbol version the binary needs (readelf wants a seekable file).
        tmp=$(mktemp -d)
        unzip -q -o "$zip" -d "$tmp"
        need=$(readelf -V "$tmp/bootstrap" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)
        rm -rf "$tmp"
        printf 'build.sh: %-28s %s  zip %8d bytes (%.1f MiB), bootstrap %9d bytes, needs glibc %s\n' \
            "$b" "$arch" "$size" "$(echo "$size / 1048576" | bc -l)" "$unzipped" "$need"
        if [ "$size" -gt "$ZIP_BYTES_MAX" ]; then
            echo "build.sh: $zip is over $ZIP_BYTES_MAX bytes" >&2
            exit 1
        fi
        if [ "$(printf '%s\n%s\n' "$need" "$GLIBC_MAX" | sort -V | tail -1)" != "$GLIBC_MAX" ]; then
            echo "build.sh: $b needs glibc $need, newer than provided.al2023's $GLIBC_MAX" >&2
            exit 1
        fi
    done
done
echo "build.sh: upload with: aws s3 cp target/lambda/<arch>/ s3://<ArtifactBucket>/<ArtifactPrefix> --recursive --exclude 'build/*'"
