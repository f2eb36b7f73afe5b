# Shell half of the test rig, for the demo (the Rust tests have tests/support/mod.rs).
# Source it; it sets up a work dir and a trap that stops everything started through it
# (background processes are recorded in rig_pids).
#   rig_pcscd            private pcscd + vpcd (two readers); sets vport, reader
#   rig_broker           private mosquitto; sets broker
#   rig_card SLOT IMAGE [LATENCY_MS]   a virtual card; prints its pid
#   rig_modem PROFILE    an emulated modem on a pty, steered through fd 3; sets modem

SIMGATE=${SIMGATE:-$PWD/target/debug/simgate}
work=$(mktemp -d /tmp/simgate-demo.XXXXXX)
rig_pids=()

rig_cleanup() {
  trap - EXIT INT TERM
  for p in "${rig_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
  echo "demo stopped; everything it started is gone."
}
trap rig_cleanup EXIT INT TERM

rig_free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Wait (bounded) until a command succeeds: pcscd and mosquitto have no readiness signal
# a shell can await.
rig_until() { for _ in $(seq 150); do "$@" > /dev/null 2>&1 && return 0; sleep 0.1; done; return 1; }

rig_pcscd() {
  local lib=""
  for f in /usr/lib/pcsc/drivers/serial/libifdvpcd.so /usr/lib/*/pcsc/drivers/serial/libifdvpcd.so; do
    [ -e "$f" ] && { lib=$f; break; }
  done
  [ -n "$lib" ] || { echo "vpcd driver missing: run 'make deps'" >&2; exit 1; }
  if [ "$(id -u)" -eq 0 ]; then
    vport=$(rig_free_port)
    mkdir -p /run/pcscd "$work/run" "$work/conf.d"
    printf 'FRIENDLYNAME "Station Reader"\nDEVICENAME /dev/null:%s\nLIBPATH %s\nCHANNELID %s\n' \
      "$vport" "$lib" "$vport" > "$work/conf.d/vpcd"
    unshare -m sh -c "mount --bind $work/run /run/pcscd && exec pcscd -f -c $work/conf.d" \
      > "$work/pcscd.log" 2>&1 &
    rig_pids+=($!)
    export PCSCLITE_CSOCK_NAME=$work/run/pcscd.comm
    reader="Station Reader"
  else
    # Without root: the system pcscd and Debian's vpcd entry (port 0x8C7B).
    vport=35963
    reader="Virtual PCD"
  fi
  rig_until sh -c "'$SIMGATE' readers | grep -q '$reader 00 01'" || { echo "pcscd did not start" >&2; exit 1; }
}

rig_broker() {
  local port
  port=$(rig_free_port)
  printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port" > "$work/mosquitto.conf"
  mosquitto -c "$work/mosquitto.conf" > "$work/mosquitto.log" 2>&1 &
  rig_pids+=($!)
  rig_until bash -c "echo > /dev/tcp/127.0.0.1/$port" || { echo "mosquitto did not start" >&2; exit 1; }
  broker="mqtt://127.0.0.1:$port"
}

rig_card() {
  "$SIMGATE" emulate card --image "devices/cards/$2" --vpcd "127.0.0.1:$((vport + $1))" \
    --latency-ms "${3:-5}" >> "$work/cards.log" 2>&1 &
  echo $!
}

# Is reader slot $1 showing a card ("yes") or not ("no")?
rig_reader_is() { "$SIMGATE" readers 2>/dev/null | grep -q "$reader 00 0$1  $2"; }

rig_modem() {
  modem=$work/ttyUSB2
  mkfifo "$work/modem.ctl"
  # In the background with its redirection: opening the fifo for reading blocks until
  # the writer below opens it.
  "$SIMGATE" emulate modem --profile "$1" --link "$modem" < "$work/modem.ctl" \
    > "$work/modem.log" 2>&1 &
  rig_pids+=($!)
  exec 3> "$work/modem.ctl" # keeps the emulator's stdin open; commands go here
  rig_until test -e "$modem" || { echo "modem emulator did not start" >&2; exit 1; }
}
