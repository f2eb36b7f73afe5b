#!/usr/bin/env bash
# The platform's side of `make demo`, as a platform engineer would drive it: set a SIM's
# record (retained), send commands and print their lifecycle as it comes back — a
# refresh, the same command id again (answered from its record, not run twice), a
# suspend refused for a card in a reader, a command for a SIM this agent does not host,
# suspend and resume of the modem's SIM (done by the modem engine, read back).
# `simgate watch` shows the rows and outcomes arriving.
#
# Then a technician's guided slot swap (`simgate swap`, through the daemon): slot 2 first
# holds a SIM that never registers, so the swap is rolled back to slot 1; with a good
# SIM in slot 2 the next swap commits. The emulator is steered through fd 3.
#
# usage: tests/rig/demo-platform.sh BROKER_URL AGENT_ID MODEM_PORT   (SIMGATE: the binary)
set -euo pipefail
SIMGATE=${SIMGATE:-$PWD/target/debug/simgate}
broker=$1
agent=$2
port=${3:-}
usim=8988211000000430010  # devices/cards/usim.toml, in a reader
gsm=8988211000000530082   # devices/cards/gsm-sim.toml, in a reader
modem=8901260886258128535 # the emulated Quectel's first SIM
second=89314404000000000019 # the SIM the demo swaps in

p() { # platform subcommand ...
  local sub=$1; shift
  echo "platform> $sub $*"
  "$SIMGATE" --log-format human platform "$sub" --broker "$broker" --agent-id "$agent" "$@" || true
}

sleep 2
p record --iccid "$usim" --json \
  '{"status":"Active","plan":"IoT 1GB","company":"ACME","end_user":"Truck 12","data_left_mb":812.5,"days_left":21,"sim_type":"Prepaid","labels":["fleet-a"]}'
p send --iccid "$usim" --action refresh --id demo-refresh-1
p send --iccid "$usim" --action refresh --id demo-refresh-1
p send --iccid "$usim" --action suspend --id demo-suspend-1
p send --iccid 8944000000000000001 --action refresh --id demo-foreign-1
p send --iccid "$modem" --action suspend --id demo-suspend-2
p send --iccid "$modem" --action resume --id demo-resume-2
sleep 2
p send --iccid "$gsm" --action set_record --id demo-record-2 \
  --params '{"status":"Suspended","plan":"PAYGO EU","sim_type":"PAYGO","days_left":0}'
p send --iccid "$gsm" --action refill --id demo-refill-1 # no params: refused by name

# Local rules for the modem's second SIM (swapped in at ~5 s): at 0.3 MB/s, its data
# left (an estimate from the record and simgate's counters) drops under 50 MB, which
# asks the platform for a refill; then a data cap suspends it. The platform answers the
# request (its id is the firing's: <iccid>.<rule>.<n>), and the refill lifts the
# suspension.
sleep 4
p record --iccid "$second" --json \
  '{"status":"Active","plan":"Prepaid 1GB","sim_type":"Prepaid","data_left_mb":51,"days_left":30,"rules":[{"id":"low","trigger":"data_left_mb","below":50,"action":"refill","params":{"amount_mb":1024}},{"id":"cap","trigger":"data_used_mb","above":4,"action":"suspend"}]}'
sleep 20
p send --iccid "$second" --action refill --id demo-refill-2 \
  --params "{\"amount_mb\":1024,\"request_id\":\"$second.low.1\"}"

# The technician's slot swap, live step by step; the first one rolls back.
if [ -n "$port" ]; then
  sleep 3
  echo "slot 2 noreg-first" >&3
  echo "technician> simgate swap --port $port --to-slot 2   (slot 2: a SIM that never registers)"
  "$SIMGATE" --log-format human swap --broker "$broker" --agent-id "$agent" --port "$port" --to-slot 2 || true
  echo "slot 2 first" >&3
  echo "technician> simgate swap --port $port --to-slot 2   (slot 2: a good SIM)"
  "$SIMGATE" --log-format human swap --broker "$broker" --agent-id "$agent" --port "$port" --to-slot 2 || true
fi
