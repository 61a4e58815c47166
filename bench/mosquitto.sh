#!/usr/bin/env bash
# Hush against Mosquitto on this machine, in the same runs: installs
# Mosquitto (Debian's package) if missing, builds the release binaries, runs
# throughput, latency and drain with --vs-mosquitto RUNS times each (default
# 3) and prints the median of every figure. Each run starts a fresh relay and
# a fresh Mosquitto (persistence on, 1 s autosave, QoS 1, persistent
# sessions, loopback). Raw JSON lines go to bench/results/.
#
#   bench/mosquitto.sh                 # 100 pairs, 300-byte payloads
#   PAIRS=1000 RUNS=5 bench/mosquitto.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
PAIRS=${PAIRS:-100}
SIZE=${SIZE:-300}

if [ ! -x /usr/sbin/mosquitto ]; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto
  else
    echo "please install mosquitto (sudo apt-get install mosquitto)" >&2
    exit 1
  fi
fi
scripts/setup.sh
cargo build --release -p hush-cli -p hush-loadgen
loadgen=target/release/hush-loadgen
mkdir -p bench/results
out="bench/results/$(date -u +%Y%m%dT%H%M%SZ).jsonl"

declare -A args=(
  [throughput]="--pairs $PAIRS --messages 1000"
  [latency]="--pairs $PAIRS --rate 2000 --seconds 15"
  [drain]="--messages 100000"
)
for run in $(seq "$RUNS"); do
  for scenario in throughput latency drain; do
    echo "run $run/$RUNS: $scenario" >&2
    # shellcheck disable=SC2086
    "$loadgen" "$scenario" ${args[$scenario]} --size "$SIZE" --vs-mosquitto --json 2>/dev/null | tail -1 >> "$out"
  done
done

python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
fields = {
    "throughput": ["msgs_per_s", "mosquitto_msgs_per_s", "ratio", "relay_cpu_us_per_msg", "mosquitto_cpu_us_per_msg", "lost", "duplicates"],
    "latency": ["p50_ms", "p99_ms", "mosquitto_p50_ms", "mosquitto_p99_ms", "ratio", "lost"],
    "drain": ["drain_s", "mosquitto_drain_s", "ratio", "relay_bytes_per_queued_msg", "mosquitto_bytes_per_queued_msg", "lost"],
}
print(f"results: {sys.argv[1]}")
for scenario, names in fields.items():
    runs = [r for r in rows if r.get("scenario") == scenario]
    print(f"\n{scenario} (median of {len(runs)} runs)")
    for name in names:
        values = [r[name] for r in runs if isinstance(r.get(name), (int, float))]
        if values:
            print(f"  {name:32} {statistics.median(values):12.3f}   runs: {', '.join(f'{v:.3f}' for v in values)}")
PY
