#!/bin/sh
# Installs the Debian 12 packages wsup needs, and only those that are missing.
# Idempotent: a second run installs nothing and does not touch the network.
# Usage: deps.sh [GROUP...]   (default: build test)
#   build  what `make` and `make run` need
#   test   what the suite needs besides (busted, cmocka, nginx with the echo module, ...)
#   bench  what `make bench` needs besides (time, gnuplot, wrk, hyperfine, nginx)
#   lint   the static checkers; fuzz: clang with libFuzzer
# WSUP_PKGS, when set, is the package list instead.
set -eu
group() {
  case $1 in
  build) echo "build-essential pkg-config liblua5.4-dev lua5.4 lua-cjson libuv1-dev libcurl4-openssl-dev
           libjansson-dev libmicrohttpd-dev libmimalloc-dev libssl-dev ca-certificates" ;;
  test) echo "lua-busted libcmocka-dev nginx-light libnginx-mod-http-echo curl openssl strace locales" ;;
  bench) echo "time gnuplot-nox wrk hyperfine nginx-light curl" ;;
  lint) echo "clang clang-tidy cppcheck lua-check" ;;
  # clang only recommends the runtime that holds libFuzzer and its sanitizers
  fuzz) echo "clang libclang-rt-14-dev" ;;
  *) echo "deps.sh: unknown group '$1' (build, test, bench, lint, fuzz)" >&2; exit 2 ;;
  esac
}
if [ -n "${WSUP_PKGS:-}" ]; then
  PKGS=$WSUP_PKGS
else
  PKGS=""
  [ $# -gt 0 ] || set -- build test
  for g in "$@"; do PKGS="$PKGS $(group "$g")"; done
fi
missing=""
for p in $PKGS; do
  case " $missing " in *" $p "*) continue ;; esac
  # db:Status-Status is "installed" whatever the selection (a held package too)
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps: installing$missing" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo -n" # -n: fail at once rather than wait for a password
# env, not export: sudo resets the environment
# A new machine may have empty package lists: update once, then install.
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
# shellcheck disable=SC2086
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
