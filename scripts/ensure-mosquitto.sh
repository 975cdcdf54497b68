#!/usr/bin/env bash
# Make sure a Mosquitto 2.x broker binary (and its command-line clients) is on this machine.
# Installs Debian's package when it is missing and we may (root, or password-less sudo), unless
# EDGEFLEET_NO_INSTALL=1; otherwise stops with the exact command to run.
set -euo pipefail

find_broker() {
  if [ -n "${EDGEFLEET_MOSQUITTO:-}" ] && [ -x "$EDGEFLEET_MOSQUITTO" ]; then echo "$EDGEFLEET_MOSQUITTO"; return; fi
  command -v mosquitto 2>/dev/null || { [ -x /usr/sbin/mosquitto ] && echo /usr/sbin/mosquitto; } || true
}

need=()
broker=$(find_broker)
[ -n "$broker" ] || need+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || need+=(mosquitto-clients)

if [ ${#need[@]} -gt 0 ]; then
  cmd="apt-get install -y --no-install-recommends ${need[*]}"
  if [ "${EDGEFLEET_NO_INSTALL:-0}" != "1" ] && command -v apt-get >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo"; else sudo="none"; fi
    if [ "$sudo" != "none" ]; then
      echo "edgefleet: installing ${need[*]} from the Debian/Ubuntu archive" >&2
      export DEBIAN_FRONTEND=noninteractive
      $sudo apt-get update -qq >/dev/null && $sudo $cmd >/dev/null
      broker=$(find_broker)
    fi
  fi
  if [ -z "$broker" ]; then
    echo "edgefleet: Mosquitto 2.x is required and could not be installed automatically. Run:" >&2
    echo "  sudo apt-get update && sudo $cmd" >&2
    exit 1
  fi
fi

# `mosquitto -h` prints its version and exits with status 3; only its output matters here.
version=$({ "$broker" -h 2>/dev/null || true; } | sed -n 's/^mosquitto version \([0-9.]*\).*/\1/p' | head -n1)
case "$version" in
  2.*) echo "edgefleet: using $broker (Mosquitto $version)" >&2 ;;
  *) echo "edgefleet: $broker is Mosquitto '${version:-unknown}', 2.x is required" >&2; exit 1 ;;
esac
