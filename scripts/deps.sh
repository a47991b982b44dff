#!/bin/sh
# Installs the Debian 12 packages wsup needs, and only those that are missing.
# Idempotent: a second run installs nothing and does not touch the network.
set -eu
PKGS="${WSUP_PKGS:-build-essential pkg-config liblua5.4-dev lua5.4 lua-cjson lua-busted lua-check
libuv1-dev libcurl4-openssl-dev libjansson-dev libmicrohttpd-dev libcmocka-dev libmimalloc-dev nginx-light
libnginx-mod-http-echo curl openssl strace libssl-dev time gnuplot-nox}"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps: installing$missing" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
# A new machine may have empty package lists: update once, then install.
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
