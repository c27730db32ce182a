#!/usr/bin/env bash
# Scale bench: the same simulated fleet (`redbridge fleet`, its own process) scraped at 1 s by,
# in turn, redbridge serve, Prometheus and VictoriaMetrics single-node; for each, from /proc of
# the process under test: CPU cores used, peak RSS, and scrapes per second achieved (from the
# scraper's own counters; the fleet has N targets, so N/s is on time).
#
#   scripts/scale-bench.sh [TARGETS ...]      default: 1000 5000 10000
#   WARMUP=15 MEASURE=45 scripts/scale-bench.sh 1000
#
# Needs a release build (`cargo build --release`), `prometheus` and `victoria-metrics` on PATH
# (scripts/install-test-deps.sh installs both). Figures are ratios on a shared machine: run it
# on an idle one. Nothing here is asserted; BENCHMARKS.md states what it printed.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${REDBRIDGE_BIN:-target/release/redbridge}
WARMUP=${WARMUP:-15}
MEASURE=${MEASURE:-45}
[ -x "$BIN" ] || { echo "build it first: cargo build --release" >&2; exit 1; }
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
TICKS=$(getconf CLK_TCK)

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
peak_rss_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
# Sum of every sample of a counter family on a /metrics page.
counter() { curl -fsS "$1" | awk -v name="$2" '$0 !~ /^#/ && ($1 == name || index($1, name "{") == 1) {s += $NF} END {printf "%.0f\n", s}'; }

measure() { # name pid metrics-url counter targets
    local name=$1 pid=$2 url=$3 family=$4 targets=$5
    sleep "$WARMUP"
    local c0 s0 c1 s1
    c0=$(cpu_ticks "$pid"); s0=$(counter "$url" "$family")
    sleep "$MEASURE"
    c1=$(cpu_ticks "$pid"); s1=$(counter "$url" "$family")
    python3 - "$name" "$targets" "$c0" "$c1" "$s0" "$s1" "$(peak_rss_kb "$pid")" "$TICKS" "$MEASURE" <<'PY'
import sys
name, n, c0, c1, s0, s1, rss, ticks, secs = sys.argv[1:]
n, secs = int(n), float(secs)
cores = (int(c1) - int(c0)) / float(ticks) / secs
rate = (float(s1) - float(s0)) / secs
print(f"{name:16s} targets {n:6d}  cores {cores:5.2f}  peak RSS {int(rss)/1024:7.0f} MiB "
      f"({int(rss)*1024/n/1024:6.1f} KiB/target)  scrapes/s {rate:8.0f} of {n} "
      f"(mean interval {n/rate if rate else float('inf'):.2f} s)")
PY
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

for targets in "${@:-1000 5000 10000}"; do
  for n in $targets; do
    zones=$(( (n + 99) / 100 ))
    dir="$work/$n"; mkdir -p "$dir"
    # Per zone: one gateway and 99 model servers.
    "$BIN" fleet --zones "$zones" --gateway-pods 1 --servers 99 --out "$dir" >"$dir/fleet.log" 2>&1 &
    fleet=$!; pids+=("$fleet")
    for _ in $(seq 1 600); do [ -s "$dir/prometheus.yml" ] && break; sleep 0.5; done
    [ -s "$dir/prometheus.yml" ] || { echo "fleet did not start: $(cat "$dir/fleet.log")" >&2; exit 1; }
    real=$(( zones * 100 ))
    echo "== $real targets ($(head -c 200 "$dir/fleet.log" | tr '\n' ' '))"

    grpc=$(free_port); http=$(free_port)
    "$BIN" serve --config "$dir/pools.yaml" --grpc-listen "127.0.0.1:$grpc" --http-listen "127.0.0.1:$http" \
        >"$dir/redbridge.log" 2>&1 &
    p=$!; pids+=("$p")
    measure redbridge "$p" "http://127.0.0.1:$http/metrics" redbridge_target_scrapes_total "$real"
    kill "$p"; wait "$p" 2>/dev/null || true

    port=$(free_port)
    prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/prom" \
        --web.listen-address="127.0.0.1:$port" --log.level=warn >"$dir/prom.log" 2>&1 &
    p=$!; pids+=("$p")
    measure prometheus "$p" "http://127.0.0.1:$port/metrics" prometheus_target_interval_length_seconds_count "$real"
    kill "$p"; wait "$p" 2>/dev/null || true

    port=$(free_port)
    victoria-metrics -promscrape.config="$dir/prometheus.yml" -storageDataPath="$dir/vm" \
        -httpListenAddr="127.0.0.1:$port" -loggerLevel=ERROR >"$dir/vm.log" 2>&1 &
    p=$!; pids+=("$p")
    measure victoria-metrics "$p" "http://127.0.0.1:$port/metrics" vm_promscrape_scrapes_total "$real"
    kill "$p"; wait "$p" 2>/dev/null || true

    kill "$fleet"; wait "$fleet" 2>/dev/null || true
  done
done
