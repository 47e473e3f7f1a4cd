#!/usr/bin/env bash
# Every check and test: formatting, clippy (with clippy.toml's bans), rustdoc with
# warnings denied, cargo-deny, then all tests (unit, golden, layering, and end-to-end
# with real Envoy). Installs what the tests need first.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup.sh
# One full run builds everything once: incremental caches (about 2 GB) buy it nothing
# and have filled a CI machine's disk.
export CARGO_INCREMENTAL=0
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
# Internals are documented for contributors, so links to private items are fine.
RUSTDOCFLAGS="-D warnings -A rustdoc::private_intra_doc_links" \
  cargo doc --workspace --no-deps --document-private-items --quiet
scripts/deny.sh
# The end-to-end tests start the xds-server and echo-backend binaries. The nextest run
# includes the Gateway API mesh conformance run (testbed/tests/gamma_conformance.rs),
# which checks docs/conformance/gamma-report.yaml (docs/conformance/README.md).
cargo build --quiet --workspace --bins
cargo nextest run --workspace --no-fail-fast
