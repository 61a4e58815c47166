#!/usr/bin/env bash
# Installs the system packages the build needs (a C compiler and OpenSSL
# headers for SQLCipher); with --tests also what the test suite needs: tmux,
# which drives `hush chat` in a real pseudo-terminal in the end-to-end tests,
# Mosquitto, which the load generator's comparison smoke test runs against,
# e2fsprogs, with which the device-seizure test makes and carves an ext4
# image, systemd, whose systemd-analyze checks the relay's unit file,
# minisign, with which the release test signs a manifest, and PostgreSQL's
# server, of which the PostgreSQL store's tests start private clusters (in
# a temporary directory, on a Unix socket; never the system's own).
# Safe to run again; does nothing when all is there.
set -euo pipefail
need=()
command -v cc >/dev/null 2>&1 || need+=(build-essential)
[ -f /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
if [ "${1:-}" = "--tests" ]; then
  command -v tmux >/dev/null 2>&1 || need+=(tmux)
  [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
  # The device-seizure test formats, mounts and carves an ext4 image.
  { command -v mkfs.ext4 && command -v filefrag; } >/dev/null 2>&1 || need+=(e2fsprogs)
  # The operator's-kit test checks the relay's systemd unit with systemd-analyze.
  command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
  # The release test signs with minisign, as the release manager does.
  command -v minisign >/dev/null 2>&1 || need+=(minisign)
  # The PostgreSQL store's tests start a private server of their own.
  ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
  else
    echo "please install: ${need[*]} (e.g. sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
fi
