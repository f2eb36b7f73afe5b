#!/usr/bin/env bash
# Install what simgate needs on Debian/Ubuntu, if missing. Idempotent.
#   deps.sh build   building simgate and its package: no test rig (`make build`, `make deb`)
#   deps.sh rig     building, plus the test rig and demo: pcscd, vpcd, mosquitto, and
#                   headless chromium with chromedriver and zbarimg (the station page)
#                   (`make deps`, `make demo`)
#   deps.sh test    the rig, plus the second broker of the tests: RabbitMQ with its
#                   MQTT plugin (`make test`)
#   deps.sh deb     building, plus what checking the package needs (`make deb-check`)
set -euo pipefail

build=(pkg-config libpcsclite-dev)
case "${1:-rig}" in
  build) packages=("${build[@]}") ;;
  rig) packages=("${build[@]}" pcscd vsmartcard-vpcd mosquitto mosquitto-clients
                 util-linux coreutils openssl chromium chromium-driver zbar-tools) ;;
  # RabbitMQ: the tests start private nodes of their own (tests/support/mod.rs); where
  # an init system runs, Debian also starts its packaged service (`systemctl disable
  # --now rabbitmq-server` stops it for good).
  test) packages=("${build[@]}" pcscd vsmartcard-vpcd mosquitto mosquitto-clients
                  util-linux coreutils openssl chromium chromium-driver zbar-tools
                  rabbitmq-server) ;;
  # systemd for systemd-analyze (verify, security); passwd for the maintainer scripts.
  deb) packages=("${build[@]}" systemd passwd) ;;
  *) echo "usage: $0 build|rig|test|deb" >&2; exit 2 ;;
esac

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "simgate: installing ${missing[*]}" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "simgate: need root or sudo to install ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian starts the packaged services where an init system runs; simgate's tests and
# demo start private instances and do not need them. vpcd listens on all interfaces:
# never leave it on a production station.

command -v cargo >/dev/null || {
  echo "simgate: cargo not found; install Rust (https://rustup.rs) or 'apt-get install cargo' (needs Rust >= 1.89)" >&2
  exit 1
}
