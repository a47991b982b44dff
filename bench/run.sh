#!/bin/sh
# make bench: runs (a) enqueue, (b) memory, (c) fleet, (d) burst, wsup beside the seed
# on Node.js (../shared/peer, skipped when node is absent); prints the results, writes
# bench/results.md and draws bench/enqueue.png. Raw output stays in bench/out/.
# About four minutes on 2 cores. Only 127.0.0.1 traffic.
set -eu
cd "$(dirname "$0")/.."
. bench/lib.sh

[ -x "$WSUP" ] || { echo "bench: $WSUP is missing; run make first" >&2; exit 1; }
# make bench installs these first; run directly, this script does it too.
sh scripts/deps.sh bench || log "some bench tools could not be installed: their figures will read n/a"
have_node || log "node or $PEER is missing: seed columns will read n/a"

rm -f "$OUT"/*.log "$OUT"/*.env
t_start=$(date +%s)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# A part that fails (nginx not starting, port 18080 taken) leaves its figures n/a; the
# others are still reported.
part() { # NAME TITLE
  log "$2"
  sh "bench/$1.sh" >"$OUT/$1.md" || { log "$1 failed (exit $?): its figures read n/a"; echo "## $1: failed, see $OUT/" >>"$OUT/$1.md"; }
}
part enqueue "(a) enqueue throughput"
part memory "(b) memory"
part fleet "(c) fleet"
part burst "(d) burst"

# shellcheck disable=SC1090
for f in enqueue memory fleet burst; do [ -f "$OUT/$f.env" ] && . "$OUT/$f.env"; done
# Figures a skipped or failed part did not write.
for v in ENQ_W_8 ENQ_S_8 ENQ_VS_SEED ENQ_HF_RATIO ENQ_W_10000 ENQ_S_10000 ENQ_FLAT MEM_W_BASE MEM_S_BASE MEM_W_PER MEM_S_PER \
  MEM_FLOOR FLEET_WRK FLEET_WRK_CPU FLEET_W_PUTS FLEET_S_PUTS FLEET_OF_WRK FLEET_VS_SEED_PUTS FLEET_W_CPU \
  FLEET_S_CPU FLEET_VS_SEED_CPU BURST_N BURST_MS BURST_REQS BURST_OK BURST_STALLS; do
  eval "[ -n \"\${$v:-}\" ] || $v=n/a"
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
elapsed=$(($(date +%s) - t_start))
cpu=$(sed -n 's/^model name[[:space:]]*: *//p' /proc/cpuinfo | head -n 1)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=""
if git status --porcelain -- src lua 2>/dev/null | grep -q .; then dirty=" + uncommitted changes in src/ or lua/"; fi
node_v=$(if have_node; then node --version; else echo "not run"; fi)
date=$(date -u '+%Y-%m-%d %H:%M UTC')

gnuplot -e "datafile='$OUT/enqueue.dat'; outfile='bench/enqueue.png'; subtitle='$date, $(nproc) cores, $cpu'" \
  bench/enqueue.gp 2>>"$OUT/gnuplot.log" || log "gnuplot failed: see $OUT/gnuplot.log"

unit() { if [ "$1" = n/a ]; then echo n/a; else echo "$1 $2"; fi; }
pct() { awk -v a="$1" 'BEGIN { if (a == "n/a" || a == "") print "n/a"; else printf "%.0f%%", a * 100 }'; }
{
  cat <<EOF
# wsup benchmarks

$date · \`make bench\` ($elapsed s)

- machine: $(nproc) cores (\`nproc\`), $cpu, Linux $(uname -r); load average $load_before before, $load_after after (a shared machine: absolute figures are noisy, ratios within one run less so)
- wsup: \`$("$WSUP" --version 2>/dev/null | head -n 1)\`, commit $commit$dirty, built with the Makefile's flags
- seed: \`../shared/peer\` on Node.js $node_v

## Summary

| measure | wsup | seed | goal | met |
|---|---:|---:|---|---|
| enqueues/s, 8 pending keys | $(fmt_int "$ENQ_W_8") | $(fmt_int "$ENQ_S_8") | ≥ 1.5x the seed (is ${ENQ_VS_SEED}x; whole processes timed by hyperfine: ${ENQ_HF_RATIO}x) | $(check "$ENQ_VS_SEED" '>=' 1.5) |
| enqueues/s, 10000 pending keys | $(fmt_int "$ENQ_W_10000") | $(fmt_int "$ENQ_S_10000") | ≥ 0.8x wsup's 8-key figure (is ${ENQ_FLAT}x) | $(check "$ENQ_FLAT" '>=' 0.8) |
| RSS, 1 uploader | $MEM_W_BASE MiB | $(unit "$MEM_S_BASE" MiB) | < 5 MiB | $(check "$MEM_W_BASE" '<' 5) |
| RSS per uploader (stalled send + 8-key pending) | $MEM_W_PER B | $(unit "$MEM_S_PER" B) | ≤ 400 B (a stalled Lua send alone, by contract: ${MEM_FLOOR:-n/a} B) | $(check "$MEM_W_PER" '<=' 400) |
| fleet of 1000: PUT/s (wrk: $(fmt_int "$FLEET_WRK")) | $(fmt_int "$FLEET_W_PUTS") | $(fmt_int "$FLEET_S_PUTS") | ≥ 40% of wrk (is $(pct "$FLEET_OF_WRK")); ≥ 5x the seed (is ${FLEET_VS_SEED_PUTS}x) | $(check "$FLEET_OF_WRK" '>=' 0.4); $(check "$FLEET_VS_SEED_PUTS" '>=' 5) |
| fleet of 1000: CPU µs per PUT (wrk: ${FLEET_WRK_CPU:-n/a}) | $FLEET_W_CPU | $FLEET_S_CPU | ≤ 20; ≤ 1/5 of the seed (is 1/$FLEET_VS_SEED_CPU) | $(check "$FLEET_W_CPU" '<=' 20); $(check "$FLEET_VS_SEED_CPU" '>=' 5) |
| $(fmt_int "$BURST_N")-patch burst: last enqueue → final state on the server | $BURST_MS ms, $(fmt_int "$BURST_REQS") requests | | (no goal) | state correct: $BURST_OK; stalled runs: $BURST_STALLS |

![enqueue throughput against pending size](enqueue.png)

EOF
  cat "$OUT/enqueue.md"; echo
  cat "$OUT/memory.md"; echo
  cat "$OUT/fleet.md"; echo
  cat "$OUT/burst.md"
} >bench/results.md

cat bench/results.md
echo
log "wrote bench/results.md and bench/enqueue.png ($elapsed s); raw output in $OUT/"
