#!/usr/bin/env bash
# `make demo`: a private pcscd with the vpcd virtual reader, a private mosquitto, an
# emulated gateway modem, simgate's virtual cards going in and out, `simgate run`
# watching them all, and the SIM table the platform receives, live. Stops everything it started on Ctrl-C, or after
# DEMO_SECONDS when that is set (for scripts).
set -euo pipefail
cd "$(dirname "$0")/../.."
SIMGATE=${SIMGATE:-$PWD/target/debug/simgate}
DEMO_SECONDS=${DEMO_SECONDS:-0}
work=$(mktemp -d /tmp/simgate-demo.XXXXXX)
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

# --- PC/SC: a private pcscd with one vpcd entry (two readers) -----------------------
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
  # Without root: the system pcscd and Debian's vpcd entry (port 0x8C7B).
  vport=35963
  reader="Virtual PCD"
fi
for _ in $(seq 100); do "$SIMGATE" readers 2>/dev/null | grep -q "$reader 00 01" && break; sleep 0.1; done

# --- the broker ------------------------------------------------------------------------
mport=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$mport" > "$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" > "$work/mosquitto.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/"$mport") 2>/dev/null && break; sleep 0.1; done
broker="mqtt://127.0.0.1:$mport"

card() { # slot image -> pid of the card
  "$SIMGATE" emulate card --image "devices/cards/$2" --vpcd "127.0.0.1:$((vport + $1))" \
    >> "$work/cards.log" 2>&1 &
  echo $!
}

# --- a gateway modem: an emulated Quectel EC25 on a pty, steered through a fifo --------
modem=$work/ttyUSB2
mkfifo "$work/modem.ctl"
"$SIMGATE" emulate modem --profile quectel-ec2x --link "$modem" < "$work/modem.ctl" \
  > "$work/modem.log" 2>&1 &
pids+=($!)
exec 3> "$work/modem.ctl" # keeps the emulator's stdin open; commands go here
for _ in $(seq 100); do [ -e "$modem" ] && break; sleep 0.1; done

# --- what a person sees with one-shot commands -----------------------------------------
first=$(card 0 usim.toml)
for _ in $(seq 100); do "$SIMGATE" readers 2>/dev/null | grep -q "$reader 00 00  yes" && break; sleep 0.1; done
echo "\$ simgate readers"; "$SIMGATE" readers; echo
echo "\$ simgate read"; "$SIMGATE" read; echo
echo "\$ simgate modem info --port $modem"; "$SIMGATE" modem info --port "$modem"; echo
kill -INT "$first"; wait "$first" 2>/dev/null || true
for _ in $(seq 100); do "$SIMGATE" readers 2>/dev/null | grep -q "$reader 00 00  no" && break; sleep 0.1; done

# --- the daemon, and the platform's live view --------------------------------------------
"$SIMGATE" --log-format human run --broker "$broker" --agent-id demo-station \
  --state-dir "$work/state" --reader "$reader *" --modem "$modem" > "$work/simgate.log" 2>&1 &
pids+=($!)

# The scenario: cards in and out at the station, a SIM swap in the gateway's modem.
(
  sleep 1; a=$(card 0 usim.toml)
  sleep 2; b=$(card 1 gsm-sim.toml)
  sleep 2; echo swap >&3
  sleep 2; kill -INT "$b"
  sleep 2; kill -INT "$a"
  sleep 1; card 0 gsm-sim.toml > /dev/null
) > /dev/null 2>&1 &
pids+=($!)

echo "simgate demo: readers '$reader 00 00/01', modem $modem, broker $broker, agent demo-station"
echo "logs in $work (simgate.log, pcscd.log); Ctrl-C stops everything."
echo
watch_args=(--log-format human watch --broker "$broker" --agent-id demo-station)
[ -t 1 ] || watch_args+=(--plain)
if [ "$DEMO_SECONDS" -gt 0 ]; then
  timeout --foreground -s INT "$DEMO_SECONDS" "$SIMGATE" "${watch_args[@]}" || true
else
  "$SIMGATE" "${watch_args[@]}" || true
fi
echo
echo "--- what simgate logged ---"
grep -E "identified|removed|inserted" "$work/simgate.log" | tail -n 16 || true
