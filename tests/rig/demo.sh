#!/usr/bin/env bash
# `make demo`: simgate at work on emulated hardware, in three acts.
#  1. A reader station: `simgate station` while virtual cards go in and out of two vpcd
#     readers (a private pcscd) as a warehouse person would insert them — eSIMs with
#     their QR code, warnings for a duplicate, a Luhn failure and a mute card, the
#     batch's CSV.
#  2. A gateway: `simgate run` on the readers and an emulated Quectel modem, publishing
#     to a private mosquitto; the platform's view of it (`simgate watch`), live, while
#     cards come and go and the modem's SIM is swapped, and the platform sets records
#     and sends commands (tests/rig/demo-platform.sh) whose outcomes come back; the new
#     modem SIM's rules act on its usage: low data asks for a refill, a data cap
#     suspends it, the platform's refill lifts the suspension.
#  1b. A provisioning station: `simgate station --provision` downloads a profile onto
#     three Blank eUICCs from a file of activation codes (the test SM-DP+, `simgate
#     emulate smdp`), two readers at once, one code mistyped and refused in words.
#  3. eSIM profiles: a virtual eUICC in a reader and one in an emulated modem, each
#     switched to its other profile by the platform (`esim_enable`), seen from the
#     platform as the swap it is (old ICCID -> new) and the new row.
#  The platform moving a gateway's eUICC to another operator (its own section below):
#     `esim_download` with `enable` from the test SM-DP+ onto an emulated modem's
#     eUICC, each download step and the swap's steps seen by the platform, committed.
# Stops everything it started on Ctrl-C; DEMO_SECONDS bounds acts 2 and 3 (for scripts).
set -euo pipefail
cd "$(dirname "$0")/../.."
DEMO_SECONDS=${DEMO_SECONDS:-0}
. tests/rig/lib.sh

rig_pcscd
rig_broker
rig_modem quectel-ec2x

echo "===== act 1: a reader station ($reader 00 00 and 00 01) ====="
# A mute card is declared so after 1.5 s instead of the default 5 s.
printf '[readers]\ncard_timeout_ms = 1500\n' > "$work/station.toml"
# The station page (README.md, "The station page"): its URL is in the station's header;
# once the page knows the duplicate (its /state), headless chromium takes a picture of
# it (--timeout: 2.5 s after it started; the page's event stream never "finishes").
page_port=$(rig_free_port)
(
  python3 - "$page_port" <<'PY' || exit 0
import sys, time, urllib.request
for _ in range(150):
    try:
        if b"DUPLICATE" in urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/state").read():
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit(1)
PY
  if command -v chromium > /dev/null; then
    # Into target/, leaving the work tree as it was (the README's pictures come from the
    # page's tests, tests/it/web.rs).
    mkdir -p target/demo
    chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
      --disable-background-networking --disable-component-update --disable-sync \
      --disable-dev-shm-usage --hide-scrollbars --user-data-dir="$work/chromium" \
      --window-size=1280,800 --timeout=2500 \
      --screenshot=target/demo/station-page.png "http://127.0.0.1:$page_port/"
  fi
) > "$work/chromium.log" 2>&1 &
rig_pids+=($!)
(
  sleep 1; a=$(rig_card 0 usim.toml)
  sleep 1; b=$(rig_card 1 euicc.toml)
  sleep 2; kill -INT "$a"
  sleep 1; a=$(rig_card 0 usim.toml)          # the same SIM again: duplicate
  sleep 2; kill -INT "$a" "$b"
  sleep 1; a=$(rig_card 0 usim-luhn-fail.toml) # a bad ICCID
  sleep 1; b=$(rig_card 1 euicc-blank.toml)    # a Blank eSIM
  sleep 2; kill -INT "$a"
  sleep 1; a=$(rig_card 0 mute.toml)           # a card that never answers
  sleep 3; kill -INT "$a" "$b"
) > /dev/null 2>&1 &
rig_pids+=($!)
timeout --foreground -s INT 17 "$SIMGATE" --config "$work/station.toml" --log-format human \
  station --state-dir "$work/station-state" --csv "$work/batch.csv" --http "$page_port" \
  --label demo-lot --company "ACME Logistics" --note "inbound pallet 7" 2> "$work/station.log" || true
echo
[ -s target/demo/station-page.png ] && echo "the station page, as chromium drew it: target/demo/station-page.png"
echo "--- the batch's CSV ---"
cat "$work/batch.csv" 2>/dev/null || true
rig_until rig_reader_is 0 no; rig_until rig_reader_is 1 no

# Act 1b (README.md, "Provisioning a batch at a reader station"): three Blank eUICCs,
# each with its own EID and certificate under one test EUM (tests/rig/rsp-pki.sh), and
# a file of four codes whose second is mistyped (a matching ID the SM-DP+ does not know).
act_provision() {
  echo
  echo "===== act 1b: a station provisioning Blank eUICCs from a file of codes ====="
  local rsp=$work/rsp eids=(89049032123451234512345678300126 89049032123451234512345678300223 89049032123451234512345678300320)
  tests/rig/rsp-pki.sh "$rsp/pki" "${eids[0]}" > /dev/null
  local i
  for i in 0 1 2; do
    [ "$i" -gt 0 ] && tests/rig/rsp-pki.sh --euicc "$rsp/pki" "$rsp/euicc-$i" "${eids[$i]}" > /dev/null
    sed "s/89049032123451234512345678910062/${eids[$i]}/" devices/cards/euicc-blank.toml > "$rsp/blank-$i.toml"
  done
  mkdir -p "$rsp/euicc-0" && cp "$rsp/pki/"{ci.pem,eum.pem,euicc.pem,euicc.key} "$rsp/euicc-0/"
  "$SIMGATE" emulate smdp --listen 127.0.0.1:0 --pki "$rsp/pki" \
    --profiles devices/smdp/profiles.toml > "$rsp/smdp.log" 2>&1 &
  rig_pids+=($!)
  rig_until grep -q "smdp listening" "$rsp/smdp.log" || { echo "the test SM-DP+ did not start" >&2; return 1; }
  local smdp
  smdp=$(sed -n 's|^smdp listening on https://||p' "$rsp/smdp.log")
  {
    echo "activation_code,eid,confirmation_code,labels,nickname"
    echo "LPA:1\$$smdp\$SIMGATE-TEST-1,,,demo-lot,truck 1"
    echo "LPA:1\$$smdp\$SIMGATE-TSET-T,,,demo-lot,"
    echo "LPA:1\$$smdp\$SIMGATE-TEST-BIG,,,demo-lot,truck 3"
    echo "LPA:1\$$smdp\$SIMGATE-TEST-T,,,demo-lot,"
  } > "$rsp/codes.csv"
  echo "--- the codes' file ---"
  cat "$rsp/codes.csv"
  echo
  prov_card() { "$SIMGATE" emulate card --image "$rsp/blank-$2.toml" --pki "$rsp/euicc-$2" \
    --vpcd "127.0.0.1:$((vport + $1))" --latency-ms 5 >> "$work/cards.log" 2>&1 & echo $!; }
  (
    sleep 1; a=$(prov_card 0 0)
    sleep 1; b=$(prov_card 1 1)       # gets the mistyped code: refused in words
    sleep 4; kill -INT "$b"
    sleep 1; b=$(prov_card 1 2)       # the next unused code
    sleep 5; kill -INT "$a" "$b"
  ) > /dev/null 2>&1 &
  rig_pids+=($!)
  timeout --foreground -s INT 14 "$SIMGATE" --log-format human station \
    --state-dir "$work/provision-state" --provision "$rsp/codes.csv" \
    --csv "$work/provision-results.csv" --ci-dir "$rsp/pki" 2> "$work/provision.log" || true
  echo
  echo "--- the batch's results ---"
  cat "$work/provision-results.csv" 2> /dev/null || true
  rig_until rig_reader_is 0 no; rig_until rig_reader_is 1 no
}
act_provision

echo
echo "===== act 2: a gateway with the platform watching ====="
echo "\$ simgate modem info --port $modem"
"$SIMGATE" modem info --port "$modem"
echo
# Usage goes out every 5 s here (900 s by default) and the modem is polled every 5 s
# (60 s by default), so the view shows usage climbing and the rules acting on it.
# A swapped-in SIM gets 8 s to register (120 s by default), so the demo's rollback is quick.
gateway_port=$(rig_free_port)
printf '[broker]\nusage_interval_secs = 5\n\n[modems]\npoll_secs = 5\nswap_register_secs = 8\n' > "$work/gateway.toml"
"$SIMGATE" --config "$work/gateway.toml" --log-format human run --broker "$broker" --agent-id demo-gw \
  --state-dir "$work/state" --reader "$reader *" --modem "$modem" --http "$gateway_port" > "$work/simgate.log" 2>&1 &
rig_pids+=($!)
(
  sleep 1; a=$(rig_card 0 usim.toml)
  sleep 2; b=$(rig_card 1 gsm-sim.toml)
  sleep 2; echo swap >&3
  sleep 3; echo connect >&3                 # the new SIM brings its data session up
  echo "traffic 150000 150000" >&3          # and uses data: 0.3 MB/s
  sleep 2; kill -INT "$b"
  sleep 2; kill -INT "$a"
  sleep 1; rig_card 0 euicc.toml > /dev/null
) > /dev/null 2>&1 &
rig_pids+=($!)
# The platform's side: records and commands going down, lifecycles and rows coming back.
tests/rig/demo-platform.sh "$broker" demo-gw "$modem" > "$work/platform.log" 2>&1 &
platform_pid=$!
rig_pids+=($platform_pid)

echo "simgate run: readers '$reader *', modem $modem, broker $broker, agent demo-gw"
echo "the gateway's station page: http://127.0.0.1:$gateway_port/ (read-only: no [http] token)"
echo "the platform's view (simgate watch) until the platform's script is done, then act 3; Ctrl-C stops everything."
echo
watch_args=(--log-format human watch --broker "$broker" --agent-id demo-gw)
[ -t 1 ] || watch_args+=(--plain)
if [ "$DEMO_SECONDS" -gt 0 ]; then
  timeout --foreground -s INT "$DEMO_SECONDS" "$SIMGATE" "${watch_args[@]}" || true
else
  # Until the platform's script is done (about 70 s), then on to act 3.
  "$SIMGATE" "${watch_args[@]}" &
  watch_pid=$!
  ( while kill -0 "$platform_pid" 2> /dev/null; do sleep 1; done
    sleep 5; kill -INT "$watch_pid" 2> /dev/null ) &
  rig_pids+=($!)
  wait "$watch_pid" || true
fi
echo
echo "--- the platform's side (tests/rig/demo-platform.sh) ---"
cat "$work/platform.log"
echo
echo "--- what simgate logged ---"
grep -E "identified|removed|inserted" "$work/simgate.log" | tail -n 16 || true

echo
echo "===== act 3: eSIM profiles switched by the platform ====="
mkfifo "$work/esim-modem.ctl"
"$SIMGATE" emulate modem --profile quectel-ec2x --esim --link "$work/ttyUSB3" \
  < "$work/esim-modem.ctl" > "$work/esim-modem.log" 2>&1 &
rig_pids+=($!)
exec 4> "$work/esim-modem.ctl"
rig_until test -e "$work/ttyUSB3" || { echo "eSIM modem emulator did not start" >&2; exit 1; }
rig_until rig_reader_is 1 no || true
rig_pids+=("$(rig_card 1 euicc.toml)")
rig_until rig_reader_is 1 yes
echo "\$ simgate esim list --reader '$reader 00 01'"
"$SIMGATE" --log-format human esim list --reader "$reader 00 01" || true
echo
echo "\$ simgate esim list --port $work/ttyUSB3"
"$SIMGATE" --log-format human esim list --port "$work/ttyUSB3" || true
echo
"$SIMGATE" --log-format human run --broker "$broker" --agent-id demo-esim \
  --state-dir "$work/esim-state" --reader "$reader 00 01" --modem "$work/ttyUSB3" \
  > "$work/esim-simgate.log" 2>&1 &
rig_pids+=($!)
(
  p() { echo "platform> send $*"; "$SIMGATE" --log-format human platform send --broker "$broker" --agent-id demo-esim "$@" || true; }
  sleep 3
  # devices/cards/euicc.toml: 8949440000000000016 enabled, 8949440000000000024 disabled.
  p --iccid 8949440000000000016 --action esim_enable --id demo-esim-1 --params '{"profile":"8949440000000000024"}'
  # The emulated modem's eUICC: 89883030000000000429 enabled, ...437 disabled.
  p --iccid 89883030000000000429 --action esim_enable --id demo-esim-2 --params '{"profile":"89883030000000000437"}'
  # Deleting the enabled profile is refused with the reason.
  p --iccid 8949440000000000024 --action esim_delete --id demo-esim-3 --params '{"profile":"8949440000000000024"}'
) > "$work/esim-platform.log" 2>&1 &
rig_pids+=($!)
echo "the platform's view of agent demo-esim (simgate watch)"
esim_secs=15
[ "$DEMO_SECONDS" -gt 0 ] && [ "$DEMO_SECONDS" -lt "$esim_secs" ] && esim_secs=$DEMO_SECONDS
timeout --foreground -s INT "$esim_secs" "$SIMGATE" --log-format human watch --plain \
  --broker "$broker" --agent-id demo-esim 2>/dev/null | tail -n 20 || true
echo
echo "--- the platform's side ---"
cat "$work/esim-platform.log"
echo
echo "--- what simgate logged ---"
grep -E "eSIM operation|swap|inserted|removed" "$work/esim-simgate.log" | tail -n 10 || true

# ----- The platform moves a gateway's eUICC to another operator's profile -----
# The test SM-DP+ (simgate emulate smdp, ES9+ over HTTPS) with a PKI made for the
# emulated modem's eUICC; a gateway trusting that CI; the platform's esim_download with
# enable: the download's steps, then the swap to the new profile (act = the profile
# switch, detect, verify registered and data up, commit: swapped old -> new).
act_esim_move() {
  echo
  echo "===== the platform moves a gateway's eUICC to another operator's profile ====="
  local pki="$work/rsp-pki"
  tests/rig/rsp-pki.sh "$pki" 89049032123451234512345678901235 > /dev/null
  "$SIMGATE" emulate smdp --listen 127.0.0.1:0 --pki "$pki" \
    --profiles devices/smdp/profiles.toml > "$work/smdp.log" 2>&1 &
  rig_pids+=($!)
  rig_until grep -q "smdp listening on https://" "$work/smdp.log" \
    || { echo "the test SM-DP+ did not start" >&2; return 1; }
  local smdp
  smdp=$(sed -n 's|^smdp listening on https://||p' "$work/smdp.log" | head -n 1)
  mkfifo "$work/move-modem.ctl"
  "$SIMGATE" emulate modem --profile generic-3gpp --esim --pki "$pki" --link "$work/ttyUSB4" \
    < "$work/move-modem.ctl" > "$work/move-modem.log" 2>&1 &
  rig_pids+=($!)
  exec 5> "$work/move-modem.ctl"
  rig_until test -e "$work/ttyUSB4" || { echo "the eSIM modem emulator did not start" >&2; return 1; }
  printf '[modems]\nswap_register_secs = 30\n\n[esim]\nci_dir = "%s"\n' "$pki" > "$work/move.toml"
  "$SIMGATE" --config "$work/move.toml" --log-format human run --broker "$broker" --agent-id demo-move \
    --state-dir "$work/move-state" --modem "$work/ttyUSB4" > "$work/move-simgate.log" 2>&1 &
  rig_pids+=($!)
  (
    sleep 3
    # The gateway's eSIM: profile 89883030000000000429 enabled; the SM-DP+ offers
    # devices/smdp/profiles.toml's SIMGATE-TEST-1 (another operator's, 8900101000000000019).
    echo "platform> send esim_download (enable) to demo-move"
    "$SIMGATE" --log-format human platform send --broker "$broker" --agent-id demo-move \
      --iccid 89883030000000000429 --action esim_download --id demo-move-1 \
      --params "{\"activation_code\":\"LPA:1\$$smdp\$SIMGATE-TEST-1\",\"enable\":true,\"nickname\":\"operator B\"}" || true
  ) > "$work/move-platform.log" 2>&1 &
  rig_pids+=($!)
  echo "the SM-DP+ at https://$smdp; the platform's view of agent demo-move (simgate watch)"
  local secs=25
  [ "$DEMO_SECONDS" -gt 0 ] && [ "$DEMO_SECONDS" -lt "$secs" ] && secs=$DEMO_SECONDS
  timeout --foreground -s INT "$secs" "$SIMGATE" --log-format human watch --plain \
    --broker "$broker" --agent-id demo-move 2>/dev/null | tail -n 24 || true
  echo
  echo "--- the platform's side ---"
  cat "$work/move-platform.log"
  echo
  echo "--- what simgate logged ---"
  grep -E "eSIM download step|swap step|command finished" "$work/move-simgate.log" | tail -n 14 || true
}
act_esim_move
