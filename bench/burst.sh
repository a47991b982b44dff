#!/bin/sh
# (d) Convergence after a 1 000 000-patch burst into one uploader whose PUTs go to the
# embedded receiver (bench/burst.lua). Prints a Markdown section; writes $OUT/burst.env.
# Usage: bench/burst.sh   (env: BURST_N, BURST_B, BURST_RUNS)
set -eu
cd "$(dirname "$0")/.."
. bench/lib.sh

N=${BURST_N:-1000000}
B=${BURST_B:-1000}
RUNS=${BURST_RUNS:-3}
env="$OUT/burst.env"
: >"$env"
: >"$OUT/burst_runs"
r=1
while [ "$r" -le "$RUNS" ]; do
  log "burst: run $r/$RUNS"
  "$WSUP" bench/burst.lua "$N" "$B" 1 >>"$OUT/burst_runs" 2>>"$OUT/burst.log" || echo "state_ok=false" >>"$OUT/burst_runs"
  r=$((r + 1))
done
col() { while read -r l; do echo "$l" | field "$1"; done <"$OUT/burst_runs" | median; }
conv=$(col converge_ms) reqs=$(col requests) after=$(col after_burst) burst=$(col burst_s) rate=$(col enqueue_per_s)
ok=$(if grep -q 'state_ok=false' "$OUT/burst_runs"; then echo "**no**"; else echo yes; fi)
stalls=$(grep -c 'flushed=false' "$OUT/burst_runs" || true)
log "burst: without I/O turns (sleep(0) between batches)"
starve=$("$WSUP" bench/burst.lua "$N" "$B" 0 2>>"$OUT/burst.log" || true)
kv "$env" BURST_MS "$conv"
kv "$env" BURST_REQS "$reqs"
kv "$env" BURST_OK "$ok"
kv "$env" BURST_N "$N"
kv "$env" BURST_STALLS "$stalls"
# shellcheck disable=SC2016 # the backquotes are Markdown
runs=$(while read -r l; do printf -- '- `%s`\n' "$l"; done <"$OUT/burst_runs")

cat <<EOF
## (d) Convergence after a burst of $(fmt_int "$N") patches

One uploader, built-in HTTP sender, PUTs to the embedded receiver (\`wsup.receiver{port = 0}\`, its
own thread, same process). The script enqueues $(fmt_int "$N") patches as fast as it can, in batches
of $B with a \`wsup.sleep(1)\` between batches so that the loop polls the sockets and PUTs go out
during the burst. Measured from the last enqueue to the moment nothing is pending or in flight
(\`up:flush()\` returns: the PUT carrying the final state has been answered, and the receiver
applies a PUT before answering); then the receiver's state is compared with the expected one.
Medians of $RUNS runs. A run whose final PUT has not been answered 10 s after the burst counts as
stalled (its state is then wrong too): $stalls of $RUNS runs stalled.

| time to final state on the server | requests in all | of which after the burst | burst duration | enqueues/s during the burst | final state correct |
|---:|---:|---:|---:|---:|---|
| **$conv ms** | **$(fmt_int "$reqs")** | $after | $burst s | $(fmt_int "$rate") | $ok |

$runs

With \`wsup.sleep(0)\` between batches instead, the loop never polls the sockets during the burst
(a timer that is already due is always run before I/O), so the first PUT cannot complete until the
burst ends: \`$starve\`

Command: \`$WSUP bench/burst.lua $N $B 1\` (and \`... $B 0\`).
EOF
