#!/bin/sh
# make soak: the fault soak (see soak/README.md). Runs, in order,
#   chaos        soak/chaos.lua on build/wsup: 200 uploaders x 5000 patches against a
#                wsup.receiver with r:chaos (30% 500/503, Retry-After, delays, drops)
#   nginx        soak/nginx.lua on build/wsup: 200 uploaders x 1000 patches to nginx,
#                stopped and started again every 2 s, 5 times
#   asan-chaos   the chaos soak scaled down (20 x 500) on build/soak/asan/wsup (ASan,
#                UBSan, and LeakSanitizer at exit; make soak builds it)
#   asan-nginx   the nginx soak scaled down (40 x 500, 3 restarts) on the same host
# then prints a summary with the figures. Exit 0 when every phase passes, 1 otherwise.
# Raw output: build/soak/ (PHASE.out, PHASE.err, PHASE_rss.txt).
# Knobs (environment): SOAK_U, SOAK_N, SOAK_SECONDS, SOAK_SEED, SOAK_MIXED=1 (non-object
# values under merge keys: fails today, see README.md), SOAK_NGINX_U, SOAK_NGINX_N,
# SOAK_RESTARTS, SOAK_RESTART_MS, SOAK_ASAN_U, SOAK_ASAN_N, SOAK_ASAN=0, SOAK_NGINX=0.
set -u
cd "$(dirname "$0")/.." || exit 2

OUT=build/soak
WSUP=build/wsup
ASAN_WSUP=build/soak/asan/wsup
U=${SOAK_U:-200} N=${SOAK_N:-5000} SECS=${SOAK_SECONDS:-60} SEED=${SOAK_SEED:-42} MIXED=${SOAK_MIXED:-0}
NG_U=${SOAK_NGINX_U:-200} NG_N=${SOAK_NGINX_N:-1000}
NG_RESTARTS=${SOAK_RESTARTS:-5} NG_EVERY=${SOAK_RESTART_MS:-2000}
AS_U=${SOAK_ASAN_U:-20} AS_N=${SOAK_ASAN_N:-500}
mkdir -p "$OUT"
rm -f "$OUT"/*.out "$OUT"/*.err "$OUT"/*_rss.txt

prefix=""
cleanup() {
  if [ -n "$prefix" ]; then
    [ -f "$prefix/nginx.pid" ] && kill "$(cat "$prefix/nginx.pid")" 2>/dev/null
    rm -rf "$prefix"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "soak: $*" >&2; }
# get PHASE NAME: NAME's value in PHASE.out ("n/a" when absent).
get() { v=$(sed -n "s/^[a-z]*\\.$2=//p" "$OUT/$1.out" 2>/dev/null | tail -n 1); echo "${v:-n/a}"; }

results=""
failed=0
# verdict PHASE RC [ASAN]: PASS when the script exited 0 and said pass=yes (and, under
# ASan, no sanitizer wrote a report); else FAIL with the reasons.
verdict() {
  why=""
  case $2 in
  0) ;;
  1) why="checks failed" ;;
  *) why="wsup exited $2 (crashed?)" ;;
  esac
  [ "$(get "$1" pass)" = yes ] || why="${why:-no pass line}"
  if [ "${3:-}" = asan ] && grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$OUT/$1.err"; then
    why="${why:+$why; }sanitizer report in $OUT/$1.err"
  fi
  if [ -z "$why" ]; then
    results="$results$1 PASS
"
  else
    results="$results$1 FAIL ($why)
"
    failed=$((failed + 1))
    sed -n 's/^\(chaos\|nginx\): FAIL: /  /p' "$OUT/$1.err" >&2
  fi
}

# run PHASE BINARY SCRIPT ARGS...: one soak process, its stdout and stderr kept.
run() {
  phase=$1 bin=$2
  shift 2
  log "$phase: $bin $*"
  t0=$(date +%s)
  SOAK_RSS=$OUT/${phase}_rss.txt "$bin" "$@" >"$OUT/$phase.out" 2>"$OUT/$phase.err"
  rc=$?
  log "$phase: exit $rc after $(($(date +%s) - t0)) s"
  return $rc
}

nginx_phase() { # PHASE BINARY U N RESTARTS EVERY_MS
  prefix=$(mktemp -d "${TMPDIR:-/tmp}/wsup-soak-nginx.XXXXXX")
  run "$1" "$2" soak/nginx.lua "$prefix" "$3" "$4" "$5" "$6"
  rc=$?
  cleanup
  prefix=""
  return $rc
}

have_nginx() { command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; }
PATH=$PATH:/usr/sbin

start=$(date +%s)
[ -x "$WSUP" ] || { log "missing $WSUP (run make)"; exit 2; }
run chaos "$WSUP" soak/chaos.lua "$U" "$N" "$SECS" "$SEED" "$MIXED"
verdict chaos $?
if [ "${SOAK_NGINX:-1}" = 0 ]; then
  results="${results}nginx skipped (SOAK_NGINX=0)
"
elif have_nginx; then
  nginx_phase nginx "$WSUP" "$NG_U" "$NG_N" "$NG_RESTARTS" "$NG_EVERY"
  verdict nginx $?
else
  results="${results}nginx FAIL (nginx is not installed)
"
  failed=$((failed + 1))
fi

if [ "${SOAK_ASAN:-1}" = 0 ]; then
  results="${results}asan-chaos skipped (SOAK_ASAN=0)
"
elif [ ! -x "$ASAN_WSUP" ]; then
  results="${results}asan-chaos FAIL (missing $ASAN_WSUP: make soak builds it)
"
  failed=$((failed + 1))
else
  # The options of scripts/asan-env.sh; the host links the runtimes, nothing to preload.
  ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:detect_stack_use_after_return=1:quarantine_size_mb=16${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
  LSAN_OPTIONS="suppressions=$PWD/scripts/lsan.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
  export ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS
  run asan-chaos "$ASAN_WSUP" soak/chaos.lua "$AS_U" "$AS_N" 10 "$SEED" "$MIXED"
  verdict asan-chaos $? asan
  if [ "${SOAK_NGINX:-1}" != 0 ] && have_nginx; then
    nginx_phase asan-nginx "$ASAN_WSUP" 40 "$AS_N" 3 1500
    verdict asan-nginx $? asan
  fi
fi
elapsed=$(($(date +%s) - start))

# ---- summary ----
reports=$(grep -lE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$OUT"/asan-*.err 2>/dev/null | tr '\n' ' ')
c() { get chaos "$1"; }
n() { get nginx "$1"; }
a() { get asan-chaos "$1"; }
b() { get asan-nginx "$1"; }
cat <<EOF

## wsup fault soak ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, ${elapsed} s)

chaos: $(c uploaders) uploaders x $N patches = $(c patches) patches over $(c enqueue_s) s, then flush $(c flush_s) s
  receiver  r:chaos{fail=0.3, statuses={500,503}, retry_after=0.2 ("1"), delay_ms={0,20}, drop=0.05, drop_after_apply=0.02}
            requests $(c rcv_requests); by status $(c rcv_statuses); dropped $(c rcv_dropped) ($(c rcv_dropped_applied) after apply)
  uploaders enqueued $(c up_enqueued), coalesced $(c up_coalesced), attempts $(c up_attempts), delivered $(c up_delivered),
            failures $(c up_failures), absorbed $(c up_absorbed), dropped $(c up_dropped), bytes $(c up_bytes)
  check     flushed $(c flushed)/$(c uploaders); paths differing from the fold: $(c paths_mismatched)
  VmRSS     after warm-up: first third $(c rss_first_kib) KiB, last third $(c rss_last_kib) KiB ($(c rss_growth_pct)%), peak $(c rss_peak_kib) KiB, flat: $(c rss_flat)
            timeline (KiB, 8 slices): $(c rss_timeline_kib)
nginx: $(n uploaders) uploaders x $NG_N patches, nginx restarted $(n restarts)x (every $NG_EVERY ms, down $(n down_ms_total) ms in all)
  uploaders attempts $(n up_attempts), delivered $(n up_delivered), failures $(n up_failures), absorbed $(n up_absorbed), dropped $(n up_dropped)
  check     flushed after the last restart $(n flushed)/$(n uploaders) in $(n flush_s) s; paths whose last stored body is not seq $NG_N: $(n paths_stale)
  VmRSS     first third $(n rss_first_kib) KiB, last third $(n rss_last_kib) KiB ($(n rss_growth_pct)%), peak $(n rss_peak_kib) KiB, flat: $(n rss_flat)
            timeline (KiB, 8 slices): $(n rss_timeline_kib)
asan ($ASAN_WSUP: ASan+UBSan, LeakSanitizer at exit; scaled down)
  chaos     $(a uploaders) x $AS_N: requests $(a rcv_requests), dropped $(a rcv_dropped), paths differing $(a paths_mismatched), flushed $(a flushed)/$(a uploaders)
  nginx     $(b uploaders) x $AS_N, $(b restarts) restarts: failures $(b up_failures), flushed $(b flushed)/$(b uploaders), stale $(b paths_stale)
  reports   ${reports:-none}

EOF
printf %s "$results" | sed 's/^/  /'
if [ "$failed" -eq 0 ]; then
  echo "soak: PASS"
else
  echo "soak: FAIL ($failed phase(s)); raw output in $OUT/"
fi
[ "$failed" -eq 0 ]
