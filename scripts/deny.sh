#!/usr/bin/env bash
# cargo-deny against deny.toml: licenses, duplicate versions, sources, then advisories.
# The RustSec advisory database is fetched from GitHub; on a machine that cannot reach
# it, the advisories check is reported as NOT RUN (loudly, never as passed) and the
# other checks still gate.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
deny=.tools/cargo-deny/bin/cargo-deny
"$deny" --log-level error check bans licenses sources
if "$deny" --log-level error fetch db >/dev/null 2>&1; then
  "$deny" --log-level error check --disable-fetch advisories
else
  echo "deny: ADVISORIES NOT CHECKED: the RustSec database (github.com/rustsec/advisory-db)" \
    "could not be fetched from this machine; run 'scripts/deny.sh' where it can be" >&2
fi
