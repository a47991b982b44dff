# Helpers shared by the bench scripts (POSIX sh; sourced, not run).
# The scripts run from the repository root; raw output goes to bench/out/.

PEER=${PEER:-../shared/peer}
OUT=${OUT:-bench/out}
WSUP=${WSUP:-build/wsup}
mkdir -p "$OUT"

# Median of the numbers on stdin, one per line (mean of the middle two when even).
median() {
  sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) printf "%.10g\n", a[(NR + 1) / 2]; else printf "%.10g\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# field NAME: the value of NAME=<value> in the lines on stdin (the last one wins).
field() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" | tail -n 1; }

# ratio A B [FORMAT]: A / B, or n/a when either is missing or B is 0.
ratio() {
  awk -v a="$1" -v b="$2" -v f="${3:-%.2f}" 'BEGIN {
    if (a == "" || b == "" || a == "n/a" || b == "n/a" || b + 0 == 0) print "n/a"; else printf f "\n", a / b }'
}

# fmt_int X: a number with thousands separators (1234567 -> 1 234 567), n/a kept.
fmt_int() {
  awk -v x="$1" 'BEGIN {
    if (x == "" || x == "n/a") { print "n/a"; exit }
    s = sprintf("%.0f", x); o = ""
    while (length(s) > 3) { o = " " substr(s, length(s) - 2) o; s = substr(s, 1, length(s) - 3) }
    print s o }'
}

# yes/no for a condition evaluated by awk on numbers, "n/a" when a value is missing.
check() { # check A OP B
  awk -v a="$1" -v b="$3" -v op="$2" 'BEGIN {
    if (a == "" || b == "" || a == "n/a" || b == "n/a") { print "n/a"; exit }
    r = (op == ">=") ? a + 0 >= b + 0 : (op == "<=") ? a + 0 <= b + 0 : (op == "<") ? a + 0 < b + 0 : a + 0 > b + 0
    print r ? "yes" : "**no**" }'
}

have_node() { [ "${SKIP_SEED:-0}" = 0 ] && command -v node >/dev/null 2>&1 && [ -f "$PEER/bench_enqueue.mjs" ]; }

log() { echo "bench: $*" >&2; }

# kv FILE NAME VALUE: appends NAME=VALUE to a summary file that run.sh sources.
kv() { echo "$2=\"$3\"" >>"$1"; }
