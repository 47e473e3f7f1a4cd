#!/usr/bin/env bash
# The main job: Rudder on the examples/ manifests with real sidecars (Envoy, or
# rudder-proxy with --proxy rudder-proxy, or both with --proxy mix) routing
# traffic between real backends. Exits non-zero if routing is wrong.
#   scripts/demo.sh [--keep-running] [--proxy envoy|rudder-proxy|mix]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup.sh
cargo build --quiet --workspace --bins
exec target/debug/rudder-demo "$@"
