#!/usr/bin/env bash
# cargo-deny against deny.toml: licenses, duplicate versions and sources, then
# advisories. The RustSec advisory database is fetched from GitHub into the cargo home;
# when it cannot be fetched, an earlier copy there is used (its date is printed), and
# with none the advisories check is reported as NOT CHECKED (loudly, never as passed)
# while the other checks still gate.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
deny=.tools/cargo-deny/bin/cargo-deny
"$deny" --log-level error check bans licenses sources
"$deny" --log-level error fetch db >/dev/null 2>&1 || true
db="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/advisory-dbs/advisory-db-*/ 2>/dev/null | head -1 || true)"
if [ -n "$db" ] && git -C "$db" rev-parse -q --verify HEAD >/dev/null 2>&1; then
  echo "deny: advisories from the RustSec database of $(git -C "$db" log -1 --format=%cs)" >&2
  "$deny" --offline --log-level error check advisories
else
  echo "deny: ADVISORIES NOT CHECKED: the RustSec database (github.com/rustsec/advisory-db)" \
    "could not be fetched from this machine; run scripts/deny.sh where it can be" >&2
fi
