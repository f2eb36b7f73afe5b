#!/usr/bin/env bash
# `make demo-station`: a reader station at work. A private pcscd with the vpcd virtual
# reader (two readers), simgate's virtual cards going in and out as a warehouse person
# would insert them, and `simgate station` showing each one at once: eSIMs with their
# QR code, warnings for a duplicate, a Luhn failure and a mute card, a running count,
# and the batch's CSV at the end. Stops everything it started on Ctrl-C, or after
# DEMO_SECONDS when that is set (for scripts).
set -euo pipefail
cd "$(dirname "$0")/../.."
SIMGATE=${SIMGATE:-$PWD/target/debug/simgate}
DEMO_SECONDS=${DEMO_SECONDS:-0}
work=$(mktemp -d /tmp/simgate-station.XXXXXX)
pids=()

cleanup() {
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
  echo "demo stopped; everything it started is gone."
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

vpcd_lib=""
for f in /usr/lib/pcsc/drivers/serial/libifdvpcd.so /usr/lib/*/pcsc/drivers/serial/libifdvpcd.so; do
  [ -e "$f" ] && { vpcd_lib=$f; break; }
done
[ -n "$vpcd_lib" ] || { echo "vpcd driver missing: run 'make deps'" >&2; exit 1; }
if [ "$(id -u)" -eq 0 ]; then
  vport=$(free_port)
  mkdir -p /run/pcscd "$work/run" "$work/conf.d"
  printf 'FRIENDLYNAME "Station Reader"\nDEVICENAME /dev/null:%s\nLIBPATH %s\nCHANNELID %s\n' \
    "$vport" "$vpcd_lib" "$vport" > "$work/conf.d/vpcd"
  unshare -m sh -c "mount --bind $work/run /run/pcscd && exec pcscd -f -c $work/conf.d" \
    > "$work/pcscd.log" 2>&1 &
  pids+=($!)
  export PCSCLITE_CSOCK_NAME=$work/run/pcscd.comm
  reader="Station Reader"
else
  vport=35963
  reader="Virtual PCD"
fi
for _ in $(seq 100); do "$SIMGATE" readers 2>/dev/null | grep -q "$reader 00 01" && break; sleep 0.1; done

card() { # slot image [latency ms] -> pid of the card
  "$SIMGATE" emulate card --image "devices/cards/$2" --vpcd "127.0.0.1:$((vport + $1))" \
    --latency-ms "${3:-5}" >> "$work/cards.log" 2>&1 &
  echo $!
}

# A mute card is declared so after 1.5 s instead of the default 5 s.
printf '[readers]\ncard_timeout_ms = 1500\n' > "$work/simgate.toml"

# The batch: two readers, cards in and out, a few that must raise a warning.
(
  sleep 1; a=$(card 0 usim.toml)
  sleep 1; b=$(card 1 euicc.toml)
  sleep 2; kill -INT "$a"
  sleep 1; a=$(card 0 usim.toml)          # the same SIM again: duplicate
  sleep 2; kill -INT "$a" "$b"
  sleep 1; a=$(card 0 usim-luhn-fail.toml) # a bad ICCID
  sleep 1; b=$(card 1 euicc-blank.toml)    # a Blank eSIM
  sleep 2; kill -INT "$a"
  sleep 1; a=$(card 0 mute.toml)           # a card that never answers
  sleep 3; kill -INT "$a" "$b"
  sleep 1; card 0 gsm-sim.toml > /dev/null
) > /dev/null 2>&1 &
pids+=($!)

station_args=(--config "$work/simgate.toml" --log-format human station
  --state-dir "$work/state" --csv "$work/batch.csv"
  --label demo-lot --company "ACME Logistics" --note "inbound pallet 7")
if [ "$DEMO_SECONDS" -gt 0 ]; then
  timeout --foreground -s INT "$DEMO_SECONDS" "$SIMGATE" "${station_args[@]}" 2>"$work/simgate.log" || true
else
  "$SIMGATE" "${station_args[@]}" 2>"$work/simgate.log" || true
fi
echo
echo "--- the batch's CSV ($work/batch.csv) ---"
cat "$work/batch.csv" 2>/dev/null || true
