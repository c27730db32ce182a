#!/usr/bin/env bash
# Runs every test redbridge has, installing what the tests need first.
# Used as is by CI (.ci/run) and by developers: `scripts/test-all.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."

# A one-off build gains nothing from incremental state, which is as large as the build itself.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
echo "== disk before the build: $(df -h . | awk 'NR==2 {print $4 " free of " $2}')"

echo "== scripts/install-test-deps.sh"
scripts/install-test-deps.sh
# Where the end-to-end tests and benches find the real servers installed above.
REDBRIDGE_ENVOY=$(compgen -G "$PWD/.venv/lib/python3*/site-packages/envoy/_bin/envoy" | head -n 1)
REDBRIDGE_PROMETHEUS=$(command -v prometheus)
REDBRIDGE_PROMTOOL=$(command -v promtool)
REDBRIDGE_VICTORIA_METRICS=$(command -v victoria-metrics)
REDBRIDGE_KUBERNETES_VALIDATE="$PWD/.venv/bin/kubernetes-validate"
export REDBRIDGE_ENVOY REDBRIDGE_PROMETHEUS REDBRIDGE_PROMTOOL REDBRIDGE_VICTORIA_METRICS REDBRIDGE_KUBERNETES_VALIDATE

echo "== scripts/check-layers.py (no import cycle between stages)"
python3 scripts/check-layers.py

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings

echo "== cargo test"
# One test at a time: the end-to-end tests share one binary, and several of them (the demo, real
# Envoy, the hostile targets) measure timing that a neighbour loading both cores would distort.
RUST_TEST_THREADS=1 cargo test --workspace --all-targets --locked

echo "== scripts/fuzz.sh --smoke 6 (every fuzz target briefly; a crash fails the run)"
# A cold instrumented build of its own (fuzz/ is a workspace of its own), then 6 s per target.
scripts/fuzz.sh --smoke 6

echo "== disk used by the builds: $(du -sh target fuzz/target 2>/dev/null | awk '{printf "%s %s  ", $2, $1}')"
