#!/usr/bin/env bash
# `make deb-check`: install the package built by `make deb` on this machine with dpkg,
# check what it put where, then purge it. Run as root (CI is). Any failed check fails the
# script; nothing is skipped silently.
set -euo pipefail
cd "$(dirname "$0")/../.."

deb=$(ls -t target/debian/simgate_*.deb | head -n1)
fail=0
ok() { echo "  ok: $*"; }
bad() { echo "  FAILED: $*" >&2; fail=1; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }

[ "$(id -u)" -eq 0 ] || { echo "deb-check: needs root (dpkg -i)" >&2; exit 1; }
if dpkg-query -W -f='${Status}' simgate 2>/dev/null | grep -q "install ok installed"; then
  echo "deb-check: simgate is already installed here; not touching it" >&2
  exit 1
fi

echo "deb-check: $deb ($(du -k "$deb" | cut -f1) KiB)"
dpkg-deb -c "$deb" | awk '{print "  " $1, $6}'
depends=$(dpkg-deb -f "$deb" Depends)
echo "  Depends: $depends"
echo "  Recommends: $(dpkg-deb -f "$deb" Recommends)"
check "depends computed (libpcsclite1, libc6)" grep -q "libpcsclite1" <<<"$depends"
check "no test rig in the package's relations" \
  bash -c '! dpkg-deb -f "$1" Depends Recommends Suggests | grep -Eq "vpcd|vsmartcard|mosquitto"' _ "$deb"
check "no emulator in the package" bash -c '! dpkg-deb -c "$1" | grep -Eq "devices/cards|emu"' _ "$deb"

purge() { dpkg --purge simgate >/dev/null 2>&1 || true; }
trap purge EXIT
dpkg -i "$deb"

mode() { [ "$(stat -c '%a %U %G' "$1")" = "$2" ] || { echo "    $1: $(stat -c '%a %U %G' "$1"), want $2" >&2; return 1; }; }
check "/usr/bin/simgate 755 root" mode /usr/bin/simgate "755 root root"
check "conffile 644 root:root (no secret in it)" mode /etc/simgate/simgate.toml "644 root root"
check "conffile registered" bash -c 'dpkg-query -W -f="\${Conffiles}" simgate | grep -q /etc/simgate/simgate.toml'
for f in /usr/lib/systemd/system/simgate.service /usr/share/polkit-1/rules.d/50-simgate.rules \
         /usr/share/simgate/udev/61-simgate-modem.rules /usr/share/simgate/udev/61-simgate-spare-port.rules \
         /usr/share/man/man1/simgate.1.gz /usr/share/man/man1/simgate-run.1.gz \
         /usr/share/bash-completion/completions/simgate \
         /usr/share/zsh/vendor-completions/_simgate /usr/share/fish/vendor_completions.d/simgate.fish \
         /usr/share/doc/simgate/README.md /usr/share/doc/simgate/MQTT.md \
         /usr/share/doc/simgate/schema/asyncapi.json /usr/share/doc/simgate/schema/event.schema.json \
         /usr/share/doc/simgate/schema/sim-state.schema.json /usr/share/doc/simgate/schema/command.schema.json; do
  check "$f 644" mode "$f" "644 root root"
done
check "man page renders" bash -c 'zcat /usr/share/man/man1/simgate.1.gz | grep -q "^.TH simgate 1"'
for s in "EXIT STATUS" ENVIRONMENT FILES EXAMPLES; do
  check "simgate(1) has $s" bash -c 'zcat /usr/share/man/man1/simgate.1.gz | grep -q "^.SH \"\?$1"' _ "$s"
done
check "simgate.toml(5) installed, every key in it" bash -c '
  [ "$(stat -c %a /usr/share/man/man5/simgate.toml.5.gz)" = 644 ] &&
  zcat /usr/share/man/man5/simgate.toml.5.gz | grep -q "^.TH simgate.toml 5" &&
  zcat /usr/share/man/man5/simgate.toml.5.gz | grep -q "keepalive_secs = 300"'
check "/etc/simgate/conf.d exists" test -d /etc/simgate/conf.d
check "the shipped configuration sets nothing (unset means default)" bash -c '
  ! /usr/bin/simgate config check | tail -n +2 | grep -v "  default$" | grep -v "<none>"'
check "a drop-in overrides it, named with its line by config check" bash -c '
  printf "[agent]\nid = \"deb-check\"\n" > /etc/simgate/conf.d/50-site.toml
  out=$(/usr/bin/simgate config check); rm -f /etc/simgate/conf.d/50-site.toml
  echo "$out" | grep -q "agent.id = \"deb-check\"  /etc/simgate/conf.d/50-site.toml:2"'
check "user simgate is a system user" bash -c '[ "$(getent passwd simgate | cut -d: -f3)" -lt 1000 ]'
check "user simgate in dialout" bash -c 'id -nG simgate | tr " " "\n" | grep -qx dialout'
check "/usr/bin/simgate --version" bash -c '/usr/bin/simgate --version | grep -q "^simgate "'
check "no emulators in the binary" bash -c '! /usr/bin/simgate emulate --help >/dev/null 2>&1'
check "config check reads /etc/simgate/simgate.toml" \
  bash -c '/usr/bin/simgate config check | grep -qx "/etc/simgate/simgate.toml: ok"'
# A user who is not root (nobody): the commands that need no secret work.
check "config check as a user who is not root" \
  bash -c 'as() { setpriv --reuid=nobody --regid=nogroup --clear-groups "$@"; }; as /usr/bin/simgate config check | grep -qx "/etc/simgate/simgate.toml: ok"'
check "readers as a user who is not root: no permission error on the configuration" \
  bash -c '! setpriv --reuid=nobody --regid=nogroup --clear-groups /usr/bin/simgate readers 2>&1 | grep -qi "permission denied\|cannot read"'
check "the password in a file of its own, read by run" bash -c '
  install -m 0640 -g simgate /dev/null /etc/simgate/broker-password
  printf "s3cret-pass\n" > /etc/simgate/broker-password
  d=$(mktemp -d); chmod 755 $d; printf "[broker]\npassword_file = \"/etc/simgate/broker-password\"\n" > $d/c.toml; chmod 644 $d/c.toml
  out=$(setpriv --reuid=nobody --regid=nogroup --clear-groups /usr/bin/simgate --config $d/c.toml config check)
  rm -rf $d /etc/simgate/broker-password
  echo "$out" | grep -q "broker.password = <secret>  /etc/simgate/broker-password" && ! echo "$out" | grep -q s3cret'
check "systemd-analyze verify" systemd-analyze verify /usr/lib/systemd/system/simgate.service
score=$(systemd-analyze security --offline=true /usr/lib/systemd/system/simgate.service 2>/dev/null |
  sed -n 's/.*Overall exposure level for simgate.service: \([0-9.]*\).*/\1/p')
echo "  exposure score: ${score:-none}"
check "exposure score <= 2.0" awk -v s="${score:-99}" 'BEGIN { exit !(s <= 2.0) }'

# The installed daemon, as its user, the way the unit starts it (no broker, no device:
# the store and the first look), for its resident memory.
state=$(mktemp -d); chown simgate: "$state"
mkfifo "$state.log"
SIMGATE_STATE_DIR=$state setpriv --reuid=simgate --regid=simgate --init-groups \
  /usr/bin/simgate run --agent-id deb-check --modem tcp://127.0.0.1:9 --log-format json \
  2>"$state.log" &
pid=$!
exec 3<"$state.log"
started=""
while IFS= read -r -t 10 line <&3; do
  case $line in *'"simgate running"'*) started=yes; break ;; esac
done
cat <&3 >/dev/null &   # keep draining: the daemon must never block on its stderr
if [ -n "$started" ] && kill -0 "$pid" 2>/dev/null; then
  ok "daemon runs as simgate: RSS $(awk '/VmRSS/ {print $2, $3}' /proc/$pid/status)"
  kill -TERM "$pid"; wait "$pid" || true
else
  bad "daemon did not start as simgate"
fi
exec 3<&-
rm -rf "$state" "$state.log"

dpkg --purge simgate
trap - EXIT
check "purge keeps the system user (Debian's convention)" bash -c 'getent passwd simgate >/dev/null'
check "purge removes the files" bash -c '[ ! -e /usr/bin/simgate ] && [ ! -e /etc/simgate/simgate.toml ]'

[ "$fail" -eq 0 ] && echo "deb-check: all checks passed" || { echo "deb-check: FAILED" >&2; exit 1; }
