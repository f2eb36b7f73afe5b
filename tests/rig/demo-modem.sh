#!/usr/bin/env bash
# The gateway half of `make demo`: an emulated Quectel EC25 on a pty (a stable link
# name, like /dev/serial/by-id), identified by simgate as a user would; then a SIM swap
# and an eSIM. Usage: tests/rig/demo-modem.sh [path/to/simgate]
set -euo pipefail
BIN=${1:-target/debug/simgate}
DIR=$(mktemp -d)
LINK=$DIR/ttyUSB2
mkfifo "$DIR/ctl"
"$BIN" emulate modem --profile quectel-ec2x --link "$LINK" <"$DIR/ctl" >"$DIR/emu.out" 2>/dev/null &
EMU=$!
exec 3>"$DIR/ctl" # keeps the emulator's stdin open; commands go here
trap 'exec 3>&-; kill $EMU 2>/dev/null || true; rm -rf "$DIR"' EXIT
for _ in $(seq 50); do [ -e "$LINK" ] && break; sleep 0.1; done

echo "== gateway modem on $LINK ($(head -1 "$DIR/emu.out"))"
"$BIN" modem info --port "$LINK"
echo
echo "== SIM swapped in the field"
echo swap >&3
sleep 0.2
"$BIN" modem info --port "$LINK"
echo
echo "== an eSIM inserted"
echo esim >&3
sleep 0.2
"$BIN" modem info --port "$LINK" --json
