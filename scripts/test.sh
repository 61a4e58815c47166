#!/usr/bin/env bash
# Runs the whole test suite: unit, property and end-to-end tests (a real relay
# on port 0 and real clients over TLS). Installs what the build and the tests
# need first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --tests
cargo test --locked --workspace --all-targets
