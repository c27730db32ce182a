#!/usr/bin/env bash
# Restart bench: seconds from the start of a `redbridge serve` process to its first valid
# GetMetrics answer and to /readyz answering 200, for the demo pool (`redbridge fleet` serves the
# simulated fleet in its own process, started once; serve is started RUNS times against it).
# Signals: queue_depth (a gauge: one scrape is enough) and requests_per_second (a rate: two
# scrapes), for the first zone of the pool `llama` in namespace `ml`. GetMetrics is sent by curl over
# HTTP/2 as gRPC (no grpcurl needed); an UNAVAILABLE answer has no value and is not valid.
#
#   scripts/restart-bench.sh            RUNS=5 by default
#   RUNS=10 REDBRIDGE_BIN=/path/to/redbridge scripts/restart-bench.sh
#
# Needs a release build (`cargo build --release`), curl with HTTP/2 and python3. Nothing is
# asserted; BENCHMARKS.md states what it printed.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${REDBRIDGE_BIN:-target/release/redbridge}
RUNS=${RUNS:-5}
[ -x "$BIN" ] || { echo "build it first: cargo build --release" >&2; exit 1; }

work=$(mktemp -d)
fleet=
cleanup() { [ -n "$fleet" ] && kill "$fleet" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

"$BIN" fleet --out "$work" >"$work/fleet.log" 2>&1 &
fleet=$!
for _ in $(seq 1 600); do [ -s "$work/pools.yaml" ] && break; sleep 0.1; done
[ -s "$work/pools.yaml" ] || { echo "the fleet wrote no pools.yaml" >&2; cat "$work/fleet.log" >&2; exit 1; }
# Let the fleet's targets answer before the first serve starts.
sleep 2

zone=$(grep -o 'zone: [a-z0-9-]*' "$work/pools.yaml" | head -n 1 | cut -d' ' -f2)

python3 - "$BIN" "$work" "$RUNS" "$zone" <<'PY'
import os, socket, statistics, struct, subprocess, sys, time, urllib.request

binary, work, runs, zone = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
LIMIT = 120.0
POLL = 0.05

def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])

def ld(field, payload):
    return varint(field << 3 | 2) + varint(len(payload)) + payload

def request(signal):
    meta = {"pool": "llama", "zone": zone, "signal": signal, "target": "10"}
    ref = ld(1, f"llama-{zone}".encode()) + ld(2, b"ml")
    ref += b"".join(ld(3, ld(1, k.encode()) + ld(2, v.encode())) for k, v in meta.items())
    msg = ld(1, ref)  # metricName empty: the trigger's own metric
    return b"\x00" + struct.pack(">I", len(msg)) + msg

def value(body):
    """metricValueFloat of the first MetricValue of a framed GetMetricsResponse; None without one
    (an error status answers no message)."""
    if len(body) < 5:
        return None
    msg = body[5:5 + struct.unpack(">I", body[1:5])[0]]
    def fields(buf):
        i = 0
        while i < len(buf):
            key, i = read_varint(buf, i)
            num, wire = key >> 3, key & 7
            if wire == 0:
                v, i = read_varint(buf, i)
            elif wire == 1:
                v, i = buf[i:i + 8], i + 8
            elif wire == 2:
                n, i = read_varint(buf, i)
                v, i = buf[i:i + n], i + n
            else:
                return
            yield num, wire, v
    for num, wire, v in fields(msg):
        if num == 1 and wire == 2:
            # proto3 leaves a 0.0 out: a MetricValue without the field is 0.
            for n2, w2, v2 in fields(v):
                if n2 == 3 and w2 == 1:
                    return struct.unpack("<d", v2)[0]
            return 0.0
    return None

def read_varint(buf, i):
    shift = n = 0
    while True:
        b = buf[i]; i += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, i
        shift += 7

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

signals = ["queue_depth", "requests_per_second"]
for s in signals:
    with open(os.path.join(work, s + ".bin"), "wb") as f:
        f.write(request(s))

def get_metrics(port, signal):
    r = subprocess.run(
        ["curl", "-s", "--http2-prior-knowledge", "--max-time", "1",
         "-H", "content-type: application/grpc", "-H", "te: trailers",
         "--data-binary", "@" + os.path.join(work, signal + ".bin"),
         f"http://127.0.0.1:{port}/externalscaler.ExternalScaler/GetMetrics"],
        capture_output=True)
    return value(r.stdout) if r.returncode == 0 else None

def ready(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
            return r.status == 200
    except Exception:
        return False

results = {k: [] for k in signals + ["readyz"]}
for run in range(runs):
    grpc, http = free_port(), free_port()
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [binary, "serve", "--config", os.path.join(work, "pools.yaml"),
         "--grpc-listen", f"127.0.0.1:{grpc}", "--http-listen", f"127.0.0.1:{http}"],
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, f"serve-{run}.log"), "w"))
    seen = {}
    try:
        while len(seen) < len(results) and time.monotonic() - t0 < LIMIT:
            for s in signals:
                if s not in seen and get_metrics(grpc, s) is not None:
                    seen[s] = time.monotonic() - t0
            if "readyz" not in seen and ready(http):
                seen["readyz"] = time.monotonic() - t0
            time.sleep(POLL)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    for k in results:
        results[k].append(seen.get(k, float("nan")))
    print(f"run {run + 1}: " + "  ".join(f"{k} {seen.get(k, float('nan')):.2f}s" for k in results),
          flush=True)

print(f"\nseconds from process start, {runs} runs (median / max):")
for k, v in results.items():
    what = "/readyz 200" if k == "readyz" else f"first valid GetMetrics ({k})"
    print(f"  {what:48s} {statistics.median(v):6.2f} / {max(v):6.2f}")
PY
