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
  # Each fuzz target over its regressions and corpus (fuzz/replay.c): one test per target.
  for r in build/replay_*; do
    [ -x "$r" ] || continue
    t=${r##*/replay_}
    if "$r" "fuzz/regressions/$t" "fuzz/corpus/$t" >"$log" 2>&1; then
      echo "$r: 1 passed, 0 failed ($(tail -n 1 "$log"))"
      passed=$((passed + 1))
    else
      echo "$r: 0 passed, 1 failed"
      cat "$log"
      failed=$((failed + 1))
    fi
  done
fi

if [ "$what" != c ]; then
  rcfile="$log.rc"
  { busted --lua=lua5.4 -o utfTerminal 2>&1; echo $? >"$rcfile"; } | tee "$log" # ROOT from .busted: spec and examples/spec
  brc=$(cat "$rcfile" 2>/dev/null || echo 1)
  rm -f "$rcfile"
  line=$(grep -E '[0-9]+ success(es)? / [0-9]+ failures? / [0-9]+ errors?' "$log" | tail -n 1)
  if [ -z "$line" ]; then
    echo "busted: no summary (crashed?)"
    failed=$((failed + 1))
  else
    s=$(echo "$line" | grep -oE '[0-9]+ success' | grep -oE '[0-9]+')
    fl=$(echo "$line" | grep -oE '[0-9]+ failure' | grep -oE '[0-9]+')
    e=$(echo "$line" | grep -oE '[0-9]+ error' | grep -oE '[0-9]+')
    pe=$(echo "$line" | grep -oE '[0-9]+ pending' | grep -oE '[0-9]+')
    passed=$((passed + s)) failed=$((failed + fl + e))
    # A skipped spec proves nothing: it counts as failed (the suite skips only when the
    # machine lacks something, such as the locales package).
    if [ "${pe:-0}" -gt 0 ]; then echo "busted: ${pe} pending, counted as failed"; failed=$((failed + pe)); fi
    # busted failing after its summary (a crash at exit): one failure more
    if [ "$brc" -ne 0 ] && [ "$((fl + e))" -eq 0 ]; then echo "busted: exit status $brc"; failed=$((failed + 1)); fi
  fi
fi

[ "${ASAN:-}" != 1 ] || asan_collect # one failure per process with a sanitizer report
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
