#!/bin/sh
# Side-by-side enqueue throughput: wsup against the seed on Node.js, in one run.
# Prints a Markdown table of medians over RUNS runs, and the ratios.
# Usage: bench/enqueue.sh [N] [RUNS]
set -eu
cd "$(dirname "$0")/.."
N=${1:-1000000}
RUNS=${2:-5}
PEER=${PEER:-../shared/peer}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2)}'; }
ops() { sed -n 's/.*ops_per_cpu_s=\([0-9]*\).*/\1/p'; }
echo "| pending keys | wsup enqueues/s | seed (Node.js) enqueues/s | wsup / seed |"
echo "|---:|---:|---:|---:|"
base=""
for K in 8 100 1000 10000; do
  w=$(for r in $(seq "$RUNS"); do build/wsup bench/enqueue.lua "$N" "$K" | ops; done | median)
  if command -v node >/dev/null && [ -f "$PEER/bench_enqueue.mjs" ]; then
    # The seed copies the whole pending patch per enqueue: fewer ops keep it bounded in time.
    n=$N; [ "$K" -ge 1000 ] && n=$((N / 20))
    s=$(for r in $(seq "$RUNS"); do node "$PEER/bench_enqueue.mjs" "$n" "$K" | ops; done | median)
    ratio=$(awk -v a="$w" -v b="$s" 'BEGIN {printf "%.2fx", a / b}')
  else
    s="n/a" ratio="n/a"
  fi
  [ -n "$base" ] || base=$w
  echo "| $K | $w | $s | $ratio |"
done
echo
awk -v a="$w" -v b="$base" 'BEGIN {printf "wsup flatness: ops/s at 10000 keys / ops/s at 8 keys = %.2f\n", a / b}'
