#!/usr/bin/env bash
# Builds the release binary reproducibly and writes dist/hush-VERSION-TARGET/:
# the binary, MANIFEST (version, commit, toolchain, SHA-256 of each file)
# and, with --sign SECRET_KEY, MANIFEST.minisig (see docs/releases.md).
#
#   scripts/release.sh                       build HEAD and write the manifest
#   scripts/release.sh --sign KEY            ... and sign it (minisign asks for the key's password)
#   scripts/release.sh --check-reproducible  build HEAD twice, in two fresh clones at
#                                            different paths, and compare byte for byte
#
# Every build is made in a fresh clone of the commit (untracked files of the
# working tree cannot leak in), with the lock file as it is (--locked), the
# clone's, cargo's and rustup's paths remapped in Rust and C code,
# timestamps from the commit (SOURCE_DATE_EPOCH) and the commit id passed
# in rather than read from the machine. A different rustc or C compiler makes
# a different binary: the manifest names both.
set -euo pipefail
cd "$(dirname "$0")/.."

commit=$(git rev-parse HEAD)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
target=$(rustc -vV | sed -n 's/^host: //p')
toolchain="$(rustc -vV | sed -n 's/^release: /rustc /p'), $(cc --version | head -1)"

# build DIR: builds $commit in a fresh clone at DIR; the binary is DIR/hush/dist-hush.
build() {
  local dir=$1
  mkdir -p "$dir"
  git clone -q "$PWD" "$dir/hush"
  git -C "$dir/hush" checkout -q "$commit"
  (
    cd "$dir/hush"
    local root cargo_home rustup_home prefix_map
    root=$(pwd -P)
    cargo_home=$(cd "${CARGO_HOME:-$HOME/.cargo}" && pwd -P)
    rustup_home=$(cd "${RUSTUP_HOME:-$HOME/.rustup}" 2>/dev/null && pwd -P || echo /nonexistent-rustup)
    prefix_map="-ffile-prefix-map=$root=/hush -ffile-prefix-map=$cargo_home=/cargo"
    export SOURCE_DATE_EPOCH
    SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)
    export HUSH_COMMIT=$commit
    export RUSTFLAGS="--remap-path-prefix=$root=/hush --remap-path-prefix=$cargo_home=/cargo --remap-path-prefix=$rustup_home=/rustup"
    export CFLAGS="$prefix_map" CXXFLAGS="$prefix_map"
    export CARGO_TARGET_DIR="$root/target"
    export CARGO_INCREMENTAL=0 TZ=UTC LC_ALL=C
    cargo build --locked --release -p hush-cli --bin hush >&2
    if grep -q -a -F "$root" target/release/hush; then
      echo "release: the binary contains its build directory ($root)" >&2
      exit 1
    fi
    cp target/release/hush dist-hush
  )
}

if [ "${1:-}" = "--check-reproducible" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  echo "release: building $commit twice ($toolchain)" >&2
  build "$work/a"
  build "$work/b/at/another/depth"
  a=$(sha256sum < "$work/a/hush/dist-hush" | cut -d' ' -f1)
  b=$(sha256sum < "$work/b/at/another/depth/hush/dist-hush" | cut -d' ' -f1)
  if [ "$a" != "$b" ]; then
    echo "release: NOT reproducible: $a and $b" >&2
    exit 1
  fi
  echo "release: reproducible: two builds of $commit at two paths are identical (sha256 $a)"
  exit 0
fi

key=""
if [ "${1:-}" = "--sign" ]; then
  key=${2:?usage: scripts/release.sh --sign SECRET_KEY}
  command -v minisign >/dev/null || { echo "release: signing needs minisign (apt-get install minisign)" >&2; exit 1; }
fi
scripts/setup.sh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
build "$work"
out="dist/hush-$version-$target"
rm -rf "$out"
mkdir -p "$out"
install -m 0755 "$work/hush/dist-hush" "$out/hush"
{
  echo "hush release manifest v1"
  echo "version $version"
  echo "commit $commit"
  echo "toolchain $toolchain"
  (cd "$out" && for file in hush; do echo "sha256 $(sha256sum "$file" | cut -d' ' -f1) $file"; done)
} > "$out/MANIFEST"
echo "release: $out/MANIFEST"
cat "$out/MANIFEST"
if [ -n "$key" ]; then
  minisign -S -s "$key" -m "$out/MANIFEST" -t "hush $version $target commit $commit"
  echo "release: signed $out/MANIFEST.minisig"
fi
