#!/usr/bin/env bash
# Builds and runs the relay on its embedded store: data in ./hush-data,
# listening on 127.0.0.1:7443. Extra arguments go to `hush serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec cargo run --locked --release -p hush-cli --bin hush -- serve "$@"
