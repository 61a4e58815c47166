#!/usr/bin/env bash
# Supply-chain checks, run by CI (.ci/run):
#  1. the crate graph keeps its rule: the relay depends on hush-proto and on
#     nothing else of ours (it must never depend on client crypto);
#  2. cargo-deny (deny.toml): known advisories, licences, banned and
#     duplicated crates, sources. The RustSec advisory database cannot be
#     fetched here: a snapshot is read from $HUSH_ADVISORY_DB if set, else
#     ../shared/advisory-db if this machine has one, else the copy kept in
#     third_party/advisory-db (see SNAPSHOT.txt in each);
#  3. that check can fail: the same run against the snapshot plus one
#     planted advisory for a crate in our lock file must be refused.
# Installs cargo-deny (pinned) on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

# 1. The relay's own crates.
ours=$(cargo tree --locked -p hush-relay -e normal,build --prefix none --format '{p}' | awk '{print $1}' | grep '^hush-' | sort -u | tr '\n' ' ')
if [ "$ours" != "hush-proto hush-relay " ]; then
  echo "supply-chain: hush-relay must depend on hush-proto and nothing else of ours; it depends on: $ours" >&2
  exit 1
fi
echo "supply-chain: the relay depends on hush-proto only"

# 2. cargo-deny against the offline advisory snapshot.
# It reads every crate of the lock file, those of other platforms too
# (a build here downloads only this one's): fetch them all first.
cargo fetch --locked --quiet
DENY_VERSION=0.20.2
if ! cargo deny --version 2>/dev/null | grep -q "$DENY_VERSION"; then
  cargo install cargo-deny --locked --version "$DENY_VERSION"
fi
if [ -n "${HUSH_ADVISORY_DB:-}" ]; then
  snapshot=$HUSH_ADVISORY_DB
elif [ -d ../shared/advisory-db/crates ]; then
  snapshot=../shared/advisory-db
else
  snapshot=third_party/advisory-db
fi
if [ ! -d "$snapshot/crates" ]; then
  echo "supply-chain: no advisory database at $snapshot (set HUSH_ADVISORY_DB to a copy of RustSec's advisory-db)" >&2
  exit 1
fi
# The snapshot's own date, so that cargo-deny's staleness limit (deny.toml)
# judges the database's age, not the day this script copied it.
snapshot_date=$(grep -o '[0-9]\{4\}-[0-9]\{2\}-[0-9]\{2\}' "$snapshot/SNAPSHOT.txt" 2>/dev/null | head -1 || true)
if [ -z "$snapshot_date" ]; then
  echo "supply-chain: $snapshot/SNAPSHOT.txt does not say when the snapshot was taken" >&2
  exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git_quiet() { git -c user.name=snapshot -c user.email=snapshot@invalid -c init.defaultBranch=main "$@" >/dev/null; }
# cargo-deny opens its database as a git checkout under db-path, in a
# directory named after the database URL; ask it for that name.
make_db() { # make_db ROOT SOURCE_DIR
  sed -e "s#^db-path = .*#db-path = \"$1\"#" deny.toml > "$1.toml"
  mkdir -p "$1"
  local dir
  dir=$(cargo deny --offline --config "$1.toml" check advisories 2>&1 | grep -o "$1/advisory-db-[0-9a-f]*" | head -1 || true)
  if [ -z "$dir" ]; then
    echo "supply-chain: cannot tell where cargo-deny looks for its database" >&2
    exit 1
  fi
  cp -r "$2" "$dir"
  (
    cd "$dir" && rm -rf .git && git_quiet init && git_quiet add -A
    GIT_AUTHOR_DATE="${snapshot_date}T00:00:00Z" GIT_COMMITTER_DATE="${snapshot_date}T00:00:00Z" git_quiet commit -qm snapshot
    touch -d "$snapshot_date" .git/HEAD
  )
}
make_db "$work/db" "$snapshot"
cargo deny --offline --locked --config "$work/db.toml" check
echo "supply-chain: cargo-deny passed (advisory database of $snapshot_date)"

# 3. A planted advisory against a crate we use must fail the same check.
cp -r "$snapshot" "$work/planted-src"
mkdir -p "$work/planted-src/crates/smallvec"
cat > "$work/planted-src/crates/smallvec/RUSTSEC-2026-9999.md" <<'ADVISORY'
```toml
[advisory]
id = "RUSTSEC-2026-9999"
package = "smallvec"
date = "2026-01-01"
url = "https://example.invalid/planted"

[versions]
patched = []
```

# Planted by scripts/supply-chain.sh to prove the check fails
ADVISORY
make_db "$work/planted" "$work/planted-src"
if out=$(cargo deny --offline --locked --config "$work/planted.toml" check advisories 2>&1); then
  echo "supply-chain: a planted advisory went unnoticed: the advisory check is not working" >&2
  exit 1
fi
if ! grep -q "RUSTSEC-2026-9999" <<<"$out"; then
  echo "supply-chain: the planted-advisory run failed for another reason:" >&2
  echo "$out" >&2
  exit 1
fi
echo "supply-chain: a planted advisory is refused, as it must be"
