#!/usr/bin/env bash
# Builds the libFuzzer targets in fuzz/ and runs each for SECONDS (default 60), seeded from the
# fixtures and the examples in the repository.
#
#   scripts/fuzz.sh 600                  # ten minutes per target, optimised build
#   scripts/fuzz.sh 60 parse config      # some targets
#   scripts/fuzz.sh --smoke 6            # the test command's smoke run: quick build, 6 s each
#   FUZZ_JOBS=2 FUZZ_RUNS=10000000 scripts/fuzz.sh 3600   # two targets at a time, stop at 10^7
#
# Plain cargo and the libfuzzer-sys crate, with the compiler flags cargo-fuzz 0.13 passes for
# `--sanitizer none`: no cargo-fuzz install, no nightly toolchain. The optimised build is the
# one `cargo fuzz build -s none` makes (same flags, same target dir), so `cargo fuzz run/tmin`
# work on it too. No sanitizer: redbridge has no unsafe code of its own; what a fuzzer finds here
# is a panic, a failed assertion, a hang or runaway memory.
#
# Exit status 1 if a target crashed (its input is left in fuzz/artifacts/<target>/: turn it into
# a regression test) or did not build; a summary line per target either way.
set -euo pipefail

profile=release
if [ "${1:-}" = "--smoke" ]; then
    # Unoptimised, no debug info: builds several times faster, runs slower. Enough for a
    # smoke run; the optimised build is for finding things.
    profile=smoke
    shift
fi
seconds="${1:-60}"
shift || true
cd "$(dirname "$0")/.."
root="$PWD"
fixtures="${REDBRIDGE_FIXTURES:-$root/../shared/fixtures}"
all=(parse trigger config plan prom_response)
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=("${all[@]}")
for t in "${targets[@]}"; do
    [[ " ${all[*]} " == *" $t "* ]] || { echo "fuzz.sh: no target $t (${all[*]})" >&2; exit 2; }
done
[[ "$seconds" =~ ^[0-9]+$ ]] || { echo "fuzz.sh: SECONDS must be a number" >&2; exit 2; }
if [ ! -d "$fixtures/exposition" ]; then
    echo "fuzz.sh: no fixtures at $fixtures (set REDBRIDGE_FIXTURES)" >&2
    exit 2
fi

# The fuzz workspace builds with exactly the dependency versions redbridge is built and tested
# with: its lock is the workspace's, plus what libfuzzer-sys needs (resolved on first build).
cp "$root/Cargo.lock" "$root/fuzz/Cargo.lock"

host=$(rustc -vV | sed -n 's/^host: //p')
flags="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
flags+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters"
flags+=" -Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares"
flags+=" --cfg fuzzing -Cllvm-args=-simplifycfg-branch-fold-threshold=0"
[[ "$host" != *-linux-* ]] || flags+=" -Cllvm-args=-sanitizer-coverage-stack-depth"
flags+=" -Cdebug-assertions"
# One codegen unit keeps cross-crate inlining working under the coverage passes (cargo-fuzz's
# reasoning): about 3x faster fuzzing, far slower building; the smoke build does without.
[ "$profile" = smoke ] || flags+=" -Ccodegen-units=1"
target_dir="${CARGO_TARGET_DIR:-$root/fuzz/target}"
echo "== fuzz build ($profile) into $target_dir"
started=$SECONDS
# --target keeps the instrumentation flags away from build scripts and proc macros.
(cd "$root/fuzz" && RUSTFLAGS="$flags${RUSTFLAGS:+ $RUSTFLAGS}" CARGO_TARGET_DIR="$target_dir" \
    cargo build --target "$host" --profile "$profile" --bins)
echo "fuzz build took $((SECONDS - started)) s"
bin_dir="$target_dir/$host/$profile"

# Seeds, rebuilt on every run, in fuzz/corpus/ (not tracked: the fixtures stay where they are).
corpus="$root/fuzz/corpus"
seed() {
    local dir="$corpus/$1" f
    shift
    mkdir -p "$dir"
    for f in "$@"; do
        [ -f "$f" ] && cp -f "$f" "$dir/seed-$(basename "$f")"
    done
    return 0
}
# The YAML blocks of a Markdown file, one seed file each.
yaml_blocks() {
    local dir="$corpus/$1" md="$2"
    mkdir -p "$dir"
    awk -v out="$dir/seed-$(basename "$md" .md)-" '
        /^```yaml/ { n++; f = out n ".yaml"; on = 1; next }
        /^```/ { on = 0; next }
        on { print > f }' "$md"
}
# Scrape bodies in pieces of at most 4 KB, whole lines each: a fuzzer mutates a short input
# hundreds of times faster than a 360 KB capture, and every family still starts some seed.
mkdir -p "$corpus/parse"
for f in "$fixtures"/exposition/*.prom; do
    split -C 4096 -d -a 3 "$f" "$corpus/parse/seed-$(basename "$f" .prom)-"
done
seed config "$root"/deploy/base/pools.yaml
yaml_blocks config "$root/docs/configuration.md"
seed plan "$root"/deploy/examples/zonalscaledobject.yaml
yaml_blocks plan "$root/docs/crd.md"
mkdir -p "$corpus/trigger" "$corpus/prom_response"
printf 'pool=llama\nzone=zone-a\nsignal=latency\nquantile=0.95\ntarget=0.2\n' \
    >"$corpus/trigger/seed-latency"
printf 'pool=llama\nsignal=requests_per_second\ntarget=10\naggregation=max\nscalerAddress=x:9090\n' \
    >"$corpus/trigger/seed-rps"
printf 'pool=mistral\nzone=zone-c\nsignal=queue_depth\nsource=thanos\ntarget=4\nactivationTarget=1\n' \
    >"$corpus/trigger/seed-prometheus"
printf 'pool=llama\nsignal=time_to_first_token_p99\nwindow=10s\nsource=vllm\ntarget=0.5\n' \
    >"$corpus/trigger/seed-window"
printf '%s' '{"status":"success","data":{"resultType":"vector","result":[{"metric":{"zone":"a","le":"0.5"},"value":[1700000000.1,"12.5"]},{"metric":{"zone":"b","le":"+Inf"},"value":[1,"3"]},{"metric":{"zone":"a"},"value":[1,"NaN"]}]}}' \
    >"$corpus/prom_response/seed-vector"
printf '%s' '{"status":"success","data":{"resultType":"scalar","result":[1700000000,"4"]}}' \
    >"$corpus/prom_response/seed-scalar"
printf '%s' '{"status":"error","errorType":"bad_data","error":"parse error"}' \
    >"$corpus/prom_response/seed-error"

# One target: libFuzzer until SECONDS (or FUZZ_RUNS executions), then its final stats.
run() {
    local t="$1" log="$root/fuzz/artifacts/$t.log"
    mkdir -p "$root/fuzz/artifacts/$t"
    local status=0
    "$bin_dir/$t" "$corpus/$t" -max_total_time="$seconds" -runs="${FUZZ_RUNS:--1}" \
        -max_len=8192 -timeout=30 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$root/fuzz/artifacts/$t/" >"$log" 2>&1 || status=$?
    local execs rate time
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    time=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log")
    if [ "$status" -eq 0 ]; then
        echo "fuzz $t: ok, ${execs:-?} executions in ${time:-?} s (${rate:-?}/s), 0 crashes"
    else
        echo "fuzz $t: FAILED (exit $status) after ${execs:-?} executions; log $log" >&2
        grep -E -m 20 "panicked|ERROR: libFuzzer|SUMMARY|Test unit written|^artifact_prefix" \
            "$log" >&2 || tail -40 "$log" >&2
    fi
    return "$status"
}

jobs="${FUZZ_JOBS:-1}"
status=0
running=0
for t in "${targets[@]}"; do
    if [ "$running" -ge "$jobs" ]; then
        wait -n || status=1
        running=$((running - 1))
    fi
    run "$t" &
    running=$((running + 1))
done
while [ "$running" -gt 0 ]; do
    wait -n || status=1
    running=$((running - 1))
done
exit "$status"
