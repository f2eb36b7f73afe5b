#!/usr/bin/env bash
# Reconnect storms on the platform link (issue 9, item 5), counted on the real stack:
#   1. one command over 1 MiB waiting in the agent's persistent session (a broker
#      without message_size_limit redelivers it on every reconnect);
#   2. two agents started with the same id, taking each other over.
# Prints how many times each agent connected in SECONDS (default 30). A measurement,
# not a test: it sleeps and asserts nothing.
#
#   benches/storms.sh [SECONDS]          # SIMGATE=path/to/simgate to measure another build
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/rig/lib.sh
secs=${1:-30}
connects() { grep -c 'connected to broker' "$1" || true; }

rig_pcscd
rig_broker
port=${broker##*:}

"$SIMGATE" run --broker "$broker" --agent-id gw-poison --state-dir "$work/poison" \
  > /dev/null 2> "$work/poison.log" &
rig_pids+=($!)
rig_until grep -q 'connected to broker' "$work/poison.log"
head -c 1572864 /dev/zero | tr '\0' x > "$work/poison.json"
mosquitto_pub -p "$port" -q 1 -t simgate/v1/gw-poison/cmd -f "$work/poison.json"
# A command after it: answered at all?
mosquitto_pub -p "$port" -q 1 -t simgate/v1/gw-poison/cmd -m \
  "{\"v\":1,\"id\":\"after\",\"iccid\":\"8988211000000430010\",\"action\":\"refresh\",\"expires_at\":$(( $(date +%s) + 600 ))}"
for twin in a b; do
  "$SIMGATE" run --broker "$broker" --agent-id gw-twin --state-dir "$work/twin-$twin" \
    > /dev/null 2> "$work/twin-$twin.log" &
  rig_pids+=($!)
done
sleep "$secs"
p=$(connects "$work/poison.log")
a=$(connects "$work/twin-a.log")
b=$(connects "$work/twin-b.log")
answered=$(grep -c 'command finished.*after\|id=after.*command finished\|"after".*finished' "$work/poison.log" || true)
echo "poison: $p connects in $secs s ($(awk "BEGIN{printf \"%.2f\", ($p-1)/$secs}") reconnects/s); the next command answered: $answered"
echo "twins: $a + $b connects in $secs s ($(awk "BEGIN{printf \"%.2f\", ($a+$b-2)/$secs}") takeovers/s); "another client" errors logged: $(cat "$work"/twin-*.log | grep -c "another client" || true)"
