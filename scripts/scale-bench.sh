#!/usr/bin/env bash
# Scale bench: the same simulated fleet (`redbridge fleet`, its own process) scraped at 1 s by,
# in turn, redbridge serve, Prometheus and VictoriaMetrics single-node; for each, from /proc of
# the process under test: CPU cores used, CPU time per scrape, peak RSS (total and per target),
# scrapes per second achieved (from the scraper's own counters; the fleet has N targets, so N/s
# is on time) and scrape lag (how late scrapes ran, from the scraper's own metrics where it has
# them).
#
#   scripts/scale-bench.sh [TARGETS ...]      default: 1000 5000 10000
#   WARMUP=15 MEASURE=45 scripts/scale-bench.sh 1000
#   ONLY="redbridge prometheus" scripts/scale-bench.sh 10000
#   SHARD=5000 scripts/scale-bench.sh 10000  # targets per fleet process (descriptor limit)
#
# Needs a release build (`cargo build --release`; the binary is looked for under
# $CARGO_TARGET_DIR, else target/, or given as REDBRIDGE_BIN), `prometheus` and
# `victoria-metrics` on PATH (scripts/install-test-deps.sh installs both). On a shared machine
# cores and scrapes/s depend on the other load; CPU seconds per scrape and RSS much less so.
# Nothing here is asserted; BENCHMARKS.md states what it printed.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${REDBRIDGE_BIN:-${CARGO_TARGET_DIR:-target}/release/redbridge}
WARMUP=${WARMUP:-15}
MEASURE=${MEASURE:-45}
ONLY=${ONLY:-redbridge prometheus victoria-metrics}
[ -x "$BIN" ] || { echo "build it first: cargo build --release (looked for $BIN)" >&2; exit 1; }
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
TICKS=$(getconf CLK_TCK)

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
peak_rss_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
# Sum of every sample of a counter family on a /metrics page.
counter() { curl -fsS "$1" | awk -v name="$2" '$0 !~ /^#/ && ($1 == name || index($1, name "{") == 1) {s += $NF} END {printf "%.0f\n", s}'; }

# How late scrapes run, in seconds past the 1 s interval, from the scraper's own metrics.
lag() { # kind url
    case $1 in
        # The stalest target: staleness is time since the start of its last good scrape, so on
        # time is at most one interval plus that scrape's duration.
        redbridge) curl -fsS "$2" | awk '$1 ~ /^redbridge_target_staleness_seconds\{/ {if ($NF > m) m = $NF} END {printf "stalest target %.2f s (lag %.2f s)", m, (m > 1 ? m - 1 : 0)}' ;;
        # The 99th percentile of the intervals between a target's scrapes.
        prometheus) curl -fsS "$2" | awk '$1 ~ /^prometheus_target_interval_length_seconds\{/ && $1 ~ /quantile="0.99"/ {v = $NF} END {printf "p99 interval %.2f s (lag %.2f s)", v, (v > 1 ? v - 1 : 0)}' ;;
        # No lag metric of its own: the mean interval (targets / scrapes per second) says it.
        *) printf "lag: see mean interval" ;;
    esac
}

measure() { # name pid metrics-url counter targets
    local name=$1 pid=$2 url=$3 family=$4 targets=$5
    sleep "$WARMUP"
    local c0 s0 c1 s1 t0 t1 late
    c0=$(cpu_ticks "$pid"); s0=$(counter "$url" "$family"); t0=$(date +%s.%N)
    sleep "$MEASURE"
    c1=$(cpu_ticks "$pid"); s1=$(counter "$url" "$family"); t1=$(date +%s.%N)
    late=$(lag "$name" "$url")
    python3 - "$name" "$targets" "$c0" "$c1" "$s0" "$s1" "$(peak_rss_kb "$pid")" "$TICKS" "$t0" "$t1" "$late" <<'PY'
import sys
name, n, c0, c1, s0, s1, rss, ticks, t0, t1, late = sys.argv[1:]
n, secs = int(n), float(t1) - float(t0)
cpu = (int(c1) - int(c0)) / float(ticks)
scrapes = float(s1) - float(s0)
rate = scrapes / secs
per_scrape = f"{cpu / scrapes * 1e6:6.0f} µs CPU/scrape" if scrapes else "no scrapes"
print(f"{name:16s} targets {n:6d}  cores {cpu / secs:5.2f}  {per_scrape}  peak RSS "
      f"{int(rss)/1024:7.0f} MiB ({int(rss)/n:6.1f} KiB/target)  scrapes/s {rate:7.0f} of {n} "
      f"(mean interval {n/rate if rate else float('inf'):.2f} s)  {late}", flush=True)
PY
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# Targets one fleet process serves at most: each target holds a listener and the scraper's
# connection, and a process may hold only `ulimit -Hn` descriptors (20,000 on the machines this
# was written on), so a bigger fleet runs as several processes.
SHARD=${SHARD:-5000}

# Starts one fleet process of `zones` zones in `dir`, waits for its files; prints its pid.
start_fleet() { # zones dir
    "$BIN" fleet --zones "$1" --gateway-pods 1 --servers 99 --out "$2" >"$2/fleet.log" 2>&1 &
    local pid=$!
    for _ in $(seq 1 600); do [ -s "$2/prometheus.yml" ] && break; sleep 0.5; done
    [ -s "$2/prometheus.yml" ] || { echo "fleet did not start: $(cat "$2/fleet.log")" >&2; exit 1; }
    echo "$pid"
}

# Adds shard `k`'s files to the merged ones in `dir`: its pools and jobs renamed `…-sK` (zone
# names repeat across shards, which is fine in different pools and jobs).
merge_shard() { # shard-dir dir k
    sed -e "s/^  - name: \(.*\)$/  - name: \1-s$3/" "$1/pools.yaml" | sed -e '/^#/d' -e '/^pools:/d' >>"$2/pools.yaml"
    sed -e "s/^  - job_name: \(.*\)$/  - job_name: \1-s$3/" "$1/prometheus.yml" | sed -n '/^scrape_configs:/,$p' | sed 1d >>"$2/prometheus.yml"
}

for n in ${*:-1000 5000 10000}; do
    zones=$(( (n + 99) / 100 ))
    dir="$work/$n"; mkdir -p "$dir"
    # Per zone: one gateway and 99 model servers; SHARD/100 zones per fleet process.
    per=$(( SHARD / 100 )); left=$zones; k=0; fleets=()
    printf 'pools:\n' >"$dir/pools.yaml"
    printf 'global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n' >"$dir/prometheus.yml"
    while [ "$left" -gt 0 ]; do
        z=$(( left < per ? left : per )); k=$((k + 1))
        mkdir -p "$dir/shard-$k"
        fleet=$(start_fleet "$z" "$dir/shard-$k"); pids+=("$fleet"); fleets+=("$fleet")
        merge_shard "$dir/shard-$k" "$dir" "$k"
        left=$(( left - z ))
    done
    real=$(( zones * 100 ))
    echo "== $real targets in ${#fleets[@]} fleet process(es) ($(grep -m1 '^fleet:' "$dir/shard-1/fleet.log" | cut -c1-160))"
    fleet_ticks() { local t=0 f; for f in "${fleets[@]}"; do t=$(( t + $(cpu_ticks "$f") )); done; echo "$t"; }
    fc0=$(fleet_ticks); ft0=$(date +%s.%N)

    for scraper in $ONLY; do
        port=$(free_port)
        case $scraper in
            redbridge)
                grpc=$(free_port)
                RUST_LOG=warn "$BIN" serve --config "$dir/pools.yaml" --grpc-listen "127.0.0.1:$grpc" \
                    --http-listen "127.0.0.1:$port" >"$dir/redbridge.log" 2>&1 &
                p=$!; pids+=("$p")
                measure redbridge "$p" "http://127.0.0.1:$port/metrics" redbridge_target_scrapes_total "$real" ;;
            prometheus)
                prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/prom" \
                    --web.listen-address="127.0.0.1:$port" --log.level=warn >"$dir/prom.log" 2>&1 &
                p=$!; pids+=("$p")
                measure prometheus "$p" "http://127.0.0.1:$port/metrics" prometheus_target_interval_length_seconds_count "$real" ;;
            victoria-metrics)
                victoria-metrics -promscrape.config="$dir/prometheus.yml" -storageDataPath="$dir/vm" \
                    -httpListenAddr="127.0.0.1:$port" -loggerLevel=ERROR >"$dir/vm.log" 2>&1 &
                p=$!; pids+=("$p")
                measure victoria-metrics "$p" "http://127.0.0.1:$port/metrics" vm_promscrape_scrapes_total "$real" ;;
            *) echo "unknown scraper $scraper" >&2; exit 1 ;;
        esac
        stop "$p"
        rm -rf "$dir/prom" "$dir/vm"
    done
    python3 -c "import sys; c=(int(sys.argv[2])-int(sys.argv[1]))/float(sys.argv[3]); s=float(sys.argv[5])-float(sys.argv[4]); print(f'fleet itself: {c/s:.2f} cores while serving the scrapers above (same machine)')" \
        "$fc0" "$(fleet_ticks)" "$TICKS" "$ft0" "$(date +%s.%N)"
    for f in "${fleets[@]}"; do stop "$f"; done
done
