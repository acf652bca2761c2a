#!/usr/bin/env bash
# Runs loadgen and monitoring-rs (release builds) on a stand-in node and
# prints the daemon's CPU time and peak RSS over the run.
#   scripts/loadgen-run.sh [lines/s] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${1:-2000}
seconds=${2:-30}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
cargo build --release --locked --workspace --bin loadgen --bin monitoring-rs >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
./target/release/loadgen --pods 50 --rate "$rate" --out "$work/node" --churn-every 10s --duration "$((seconds + 5))s" 2>"$work/loadgen.log" &
sleep 1
./target/release/monitoring-rs --log-collector kubernetes --root-path "$work/node/var/log/containers" \
  --kubeconfig "$work/node/kubeconfig" --data-directory "$work/data" --listen "127.0.0.1:$port" 2>"$work/daemon.log" &
pid=$!
sleep 2
tick=$(getconf CLK_TCK)
read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
peak=0
for _ in $(seq 1 "$seconds"); do
  sleep 1
  rss=$(awk '/VmRSS/{print $2}' "/proc/$pid/status")
  [ "$rss" -gt "$peak" ] && peak=$rss
done
read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
status=$(curl -s "127.0.0.1:$port/status")
kill -TERM "$pid"; wait "$pid" || true
python3 - "$status" "$rate" "$seconds" "$((u1 - u0 + s1 - s0))" "$tick" "$peak" <<'PY'
import json, sys
status, rate, seconds, ticks, hz, peak = json.loads(sys.argv[1]), *map(int, sys.argv[2:])
cpu = ticks / hz
lines = status["collector"]["lines_total"]
store = status["store"]
print(f"{rate} lines/s for {seconds} s: {lines} lines collected, CPU {cpu:.2f} s "
      f"({cpu / (rate * seconds) * 1e6:.1f} s per million lines), peak RSS {peak / 1024:.1f} MiB, "
      f"stored/raw {store['bytes_stored'] / max(store['bytes_raw'], 1):.2f}")
PY
