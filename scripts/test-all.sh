#!/usr/bin/env bash
# Runs every test redbridge has, installing what the tests need first.
# Used as is by CI (.ci/run) and by developers: `scripts/test-all.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --workspace --all-targets --locked
