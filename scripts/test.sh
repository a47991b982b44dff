#!/bin/sh
# Runs the C tests and the busted suite; ends with one line "N passed, N failed"
# counting every test. Usage: test.sh [c|lua]   (default: both)
set -u
cd "$(dirname "$0")/.." || exit 2
what="${1:-all}"
passed=0 failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

if [ "${ASAN:-}" = 1 ]; then
  # The sanitizer build in $B (make check-asan), from a shadow root: see scripts/asan-env.sh.
  . scripts/asan-env.sh
fi

if [ "$what" != lua ]; then
  for t in build/test_*; do
    [ -x "$t" ] || continue
    "$t" >"$log" 2>&1
    rc=$?
    p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -n 1)
    f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -n 1)
    p=${p:-0} f=${f:-0}
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi # a crash counts as a failure
    echo "$t: $p passed, $f failed"
    [ "$f" -eq 0 ] || cat "$log"
    passed=$((passed + p)) failed=$((failed + f))
  done
fi

if [ "$what" != c ]; then
  busted --lua=lua5.4 -o utfTerminal 2>&1 | tee "$log" # ROOT from .busted: spec and examples/spec
  line=$(grep -E '[0-9]+ success(es)? / [0-9]+ failures? / [0-9]+ errors?' "$log" | tail -n 1)
  if [ -z "$line" ]; then
    echo "busted: no summary (crashed?)"
    failed=$((failed + 1))
  else
    s=$(echo "$line" | grep -oE '[0-9]+ success' | grep -oE '[0-9]+')
    fl=$(echo "$line" | grep -oE '[0-9]+ failure' | grep -oE '[0-9]+')
    e=$(echo "$line" | grep -oE '[0-9]+ error' | grep -oE '[0-9]+')
    passed=$((passed + s)) failed=$((failed + fl + e))
  fi
fi

[ "${ASAN:-}" != 1 ] || asan_collect # one failure per process with a sanitizer report
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
