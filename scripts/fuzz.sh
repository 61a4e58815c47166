#!/usr/bin/env bash
# A fuzzing campaign with AFL++ over Hush's decoders (crates/fuzz), on the
# stable toolchain through cargo-afl:
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Installs cargo-afl on first use, builds the instrumented runner in
# target/afl, then runs afl-fuzz on each target (default: all of them) for
# SECONDS_PER_TARGET (default 600), two targets at a time, starting from its
# corpus in crates/fuzz/corpus/TARGET and resuming an earlier campaign's
# queue in target/afl/out/TARGET. Prints executions, paths and crashes per
# target. A crash is left in target/afl/out/TARGET/default/crashes: copy it
# into crates/fuzz/corpus/TARGET/ as crash-NAME, fix the decoder, and the
# test command replays it from then on.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(client_frame relay_frame invite wipe_code content mls_message key_file_slot relay_config
    key_package relay_session group_schedule)
fi
command -v cargo-afl >/dev/null || cargo install cargo-afl --locked
CARGO_TARGET_DIR=target/afl cargo afl build --release --locked -p hush-fuzz --features afl
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 AFL_AUTORESUME=1

run() {
  local target=$1 timeout=1000
  # The structure-aware targets set up a relay or MLS groups per input.
  case $target in relay_session | group_schedule) timeout=10000 ;; esac
  mkdir -p target/afl/out
  cargo afl fuzz -V "$secs" -t "$timeout" -i "crates/fuzz/corpus/$target" -o "target/afl/out/$target" \
    -- target/afl/release/hush-fuzz "$target" > "target/afl/out/$target.log" 2>&1 || true
}
for ((i = 0; i < ${#targets[@]}; i += 2)); do
  run "${targets[i]}" &
  if [ $((i + 1)) -lt ${#targets[@]} ]; then run "${targets[i + 1]}" & fi
  wait
done

printf '%-14s %14s %8s %8s\n' target executions corpus crashes
for target in "${targets[@]}"; do
  stats=target/afl/out/$target/default/fuzzer_stats
  if [ ! -f "$stats" ]; then
    echo "$target: no statistics (see target/afl/out/$target.log)"
    continue
  fi
  value() { sed -n "s/^$1 *: *//p" "$stats"; }
  printf '%-14s %14s %8s %8s\n' "$target" "$(value execs_done)" "$(value corpus_count)" "$(value saved_crashes)"
done
