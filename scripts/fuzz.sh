#!/usr/bin/env bash
# Runs every libFuzzer target in fuzz/ for SECONDS each (default 60), seeded with the fixtures.
#
#   scripts/fuzz.sh 600          # ten minutes per target
#   scripts/fuzz.sh 60 parse     # one target
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). cargo-fuzz uses nightly-only compiler flags;
# on the stable toolchain RUSTC_BOOTSTRAP=1 enables them. No sanitizer: redbridge has no unsafe
# code of its own, and what a fuzzer finds here is a panic (a crash) or a failed assertion.
# A crash leaves its input in fuzz/artifacts/<target>/; turn it into a regression test.
set -euo pipefail

seconds="${1:-60}"
shift || true
cd "$(dirname "$0")/.."
root="$PWD"
fixtures="${REDBRIDGE_FIXTURES:-$root/../shared/fixtures}"
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    targets=(parse trigger config plan prom_response)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz is not installed: cargo install cargo-fuzz" >&2
    exit 2
fi
export RUSTC_BOOTSTRAP=1

# Seeds, rebuilt on every run, outside the repository's tracked files.
seed() {
    local target="$1"
    shift
    local dir="$root/fuzz/corpus/$target"
    mkdir -p "$dir"
    local f
    for f in "$@"; do
        [ -f "$f" ] && cp -f "$f" "$dir/seed-$(basename "$f")"
    done
    return 0
}
seed parse "$fixtures"/exposition/*.prom
seed config "$root"/deploy/base/pools.yaml "$root"/deploy/examples/*.yaml
seed plan "$root"/deploy/examples/zonalscaledobject.yaml
mkdir -p "$root/fuzz/corpus/trigger" "$root/fuzz/corpus/prom_response"
printf 'pool=llama\nzone=zone-a\nsignal=latency\nquantile=0.95\ntarget=0.2\n' \
    >"$root/fuzz/corpus/trigger/seed-latency"
printf 'pool=llama\nsignal=requests_per_second\ntarget=10\naggregation=max\nscalerAddress=x:9090\n' \
    >"$root/fuzz/corpus/trigger/seed-rps"
printf '%s' '{"status":"success","data":{"resultType":"vector","result":[{"metric":{"zone":"a"},"value":[1700000000.1,"12.5"]},{"metric":{},"value":[1,"NaN"]}]}}' \
    >"$root/fuzz/corpus/prom_response/seed-vector"
printf '%s' '{"status":"error","errorType":"bad_data","error":"parse error"}' \
    >"$root/fuzz/corpus/prom_response/seed-error"

status=0
for t in "${targets[@]}"; do
    echo "== fuzz target $t: ${seconds}s"
    log="$root/fuzz/artifacts/$t.log"
    mkdir -p "$root/fuzz/artifacts/$t"
    if (cd fuzz && cargo fuzz run --sanitizer none "$t" "corpus/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=262144 \
        -print_final_stats=1) >"$log" 2>&1; then
        grep -E "^stat::number_of_executed_units|^Done" "$log" || true
    else
        status=1
        echo "fuzz target $t failed; see $log:" >&2
        tail -40 "$log" >&2
    fi
done
exit "$status"
