#!/bin/sh
# (c) A fleet of 1000 always-busy uploaders PUTting to the peer's nginx sink on
# 127.0.0.1:18080, in one run: wrk as the ceiling, wsup (bench/fleet.lua), and the seed
# (../shared/peer/bench_fleet.mjs). Starts nginx as ../shared/peer/README.md says and
# stops it (by its pid) on the way out. Prints a Markdown section; writes $OUT/fleet.env.
# Usage: bench/fleet.sh   (env: FLEET_U, FLEET_TOTAL, FLEET_RUNS, WRK_SECONDS)
set -eu
cd "$(dirname "$0")/.."
. bench/lib.sh

U=${FLEET_U:-1000}
TOTAL=${FLEET_TOTAL:-100000}
RUNS=${FLEET_RUNS:-5}
WRK_SECONDS=${WRK_SECONDS:-5}
PORT=18080
BASE="http://127.0.0.1:$PORT"
env="$OUT/fleet.env"
: >"$env"
# shellcheck disable=SC3045 # dash and bash both have ulimit -n
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

up() { curl -s -o /dev/null -m 1 -X PUT -d '{}' "$BASE/worker/ping"; }
if up; then
  log "fleet: something already listens on 127.0.0.1:$PORT; stop it first"
  echo "## (c) Fleet: skipped, 127.0.0.1:$PORT was already in use"
  kv "$env" FLEET_SKIPPED yes
  exit 0
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
conf="$(cd "$PEER/nginx" && pwd)/nginx.conf"
"$NGINX" -c "$conf" -p /tmp >"$OUT/nginx.log" 2>&1 &
nginx_pid=$!
trap 'kill "$nginx_pid" 2>/dev/null || true; wait "$nginx_pid" 2>/dev/null || true' EXIT INT TERM
i=0
until up; do
  i=$((i + 1))
  if [ "$i" -gt 50 ]; then log "fleet: nginx did not start: $(cat "$OUT/nginx.log")"; exit 1; fi
  sleep 0.1
done

# The ceiling: wrk before and after the wsup runs (the machine is shared; its load drifts),
# and the higher of the two counts.
wrk_run() {
  log "fleet: wrk ceiling (${WRK_SECONDS}s, $1)"
  /usr/bin/time -f 'wrk_cpu_s=%U %S' -o "$OUT/wrk_$1.time" \
    wrk -t2 -c1000 -d"${WRK_SECONDS}s" -s "$PEER/put.lua" "$BASE/worker/1" >"$OUT/wrk_$1.log" 2>&1 || true
  r=$(sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' "$OUT/wrk_$1.log")
  # wrk's own CPU per request: a lean client (hand-written HTTP, no allocation per request),
  # so this is about what the kernel's loopback TCP costs a client per request.
  n=$(sed -n 's/^ *\([0-9]*\) requests in .*/\1/p' "$OUT/wrk_$1.log")
  awk -v n="${n:-0}" '/wrk_cpu_s=/ { sub("wrk_cpu_s=", ""); if (n > 0) printf "%.1f\n", ($1 + $2) * 1e6 / n; else print "n/a" }' \
    "$OUT/wrk_$1.time" >"$OUT/wrk_$1.cpu" 2>/dev/null || echo n/a >"$OUT/wrk_$1.cpu"
  echo "${r:-n/a}"
}
wrk_before=$(wrk_run before)

# One wsup run: its line plus the process's whole CPU time (setup included) from /usr/bin/time.
wsup_run() {
  /usr/bin/time -f 'proc_cpu_s=%U+%S maxrss_kib=%M' -o "$OUT/time.tmp" \
    "$WSUP" bench/fleet.lua "$U" "$TOTAL" "$BASE" "$@" >"$OUT/fleet_run.tmp" 2>>"$OUT/fleet.err" || true
  tr '\n' ' ' <"$OUT/fleet_run.tmp"
  tr '\n' ' ' <"$OUT/time.tmp"
  echo
}
: >"$OUT/fleet_w"
r=1
while [ "$r" -le "$RUNS" ]; do
  log "fleet: wsup run $r/$RUNS"
  wsup_run hook | tee -a "$OUT/fleet.log" >>"$OUT/fleet_w"
  r=$((r + 1))
done
log "fleet: wsup, tick variant"
tick=$(wsup_run tick 5 | tee -a "$OUT/fleet.log")

wrk_after=$(wrk_run after)
wrk_rps=$(printf '%s\n%s\n' "$wrk_before" "$wrk_after" | grep -v n/a | sort -g | tail -n 1)
wrk_rps=${wrk_rps:-n/a}
wrk_cpu=$(cat "$OUT/wrk_before.cpu" "$OUT/wrk_after.cpu" 2>/dev/null | grep -v n/a | median)

seed=""
if have_node; then
  log "fleet: seed ($TOTAL PUTs; about half a minute)"
  seed=$(node "$PEER/bench_fleet.mjs" "$U" "$TOTAL" "$PORT" 2>>"$OUT/fleet.err" | tee -a "$OUT/fleet.log")
fi

w_puts=$(while read -r l; do echo "$l" | field puts_per_s; done <"$OUT/fleet_w" | median)
w_cpu=$(while read -r l; do echo "$l" | field cpu_us_per_put; done <"$OUT/fleet_w" | median)
t_puts=$(echo "$tick" | field puts_per_s)
t_cpu=$(echo "$tick" | field cpu_us_per_put)
s_puts=$(echo "$seed" | field puts_per_s)
s_cpu=$(echo "$seed" | field cpu_us_per_put)
s_puts=${s_puts:-n/a} s_cpu=${s_cpu:-n/a}
of_wrk=$(ratio "$w_puts" "$wrk_rps" "%.2f")
vs_seed_puts=$(ratio "$w_puts" "$s_puts" "%.1f")
vs_seed_cpu=$(ratio "$s_cpu" "$w_cpu" "%.1f")
kv "$env" FLEET_WRK "$wrk_rps"
kv "$env" FLEET_WRK_CPU "$wrk_cpu"
kv "$env" FLEET_W_PUTS "$w_puts"
kv "$env" FLEET_W_CPU "$w_cpu"
kv "$env" FLEET_S_PUTS "$s_puts"
kv "$env" FLEET_S_CPU "$s_cpu"
kv "$env" FLEET_OF_WRK "$of_wrk"
kv "$env" FLEET_VS_SEED_PUTS "$vs_seed_puts"
kv "$env" FLEET_VS_SEED_CPU "$vs_seed_cpu"
pct() { awk -v a="$1" 'BEGIN { if (a == "n/a") print "n/a"; else printf "%.0f%%", a * 100 }'; }
# shellcheck disable=SC2016 # the backquotes are Markdown
runs=$(while read -r l; do printf '`%s` ' "$(echo "$l" | sed 's/ *$//')"; done <"$OUT/fleet_w")

cat <<EOF
## (c) Fleet: $U always-busy uploaders against nginx

nginx from \`$PEER/nginx/nginx.conf\` (one worker, answers 204) on 127.0.0.1:$PORT, sharing the
machine's cores with the client under test. Each uploader PUTs to \`/worker/<i>\`; the run ends
after $TOTAL delivered PUTs. CPU per PUT is the client process's CPU time (user + system)
over the measured span divided by the PUTs delivered in it; wsup reads it with \`os.clock()\`
(getrusage), the seed with \`process.cpuUsage()\`.

| client | PUT/s | CPU µs per PUT | vs wrk |
|---|---:|---:|---:|
| wrk -t2 -c1000 (ceiling: the higher of ${WRK_SECONDS} s before the wsup runs, $(fmt_int "$wrk_before"), and after, $(fmt_int "$wrk_after"); CPU: the mean of the two runs' (user + system) / requests) | $(fmt_int "$wrk_rps") | $wrk_cpu | 100% |
| **wsup**, built-in HTTP sender, next patch from \`classify\` (median of $RUNS, per column) | **$(fmt_int "$w_puts")** | **$w_cpu** | $(pct "$of_wrk") |
| wsup, next patch from a \`wsup.every(5 ms)\` timer into all uploaders (1 run) | $(fmt_int "$t_puts") | $t_cpu | $(pct "$(ratio "$t_puts" "$wrk_rps" "%.4f")") |
| seed (Node.js fetch), 1 run | $(fmt_int "$s_puts") | $s_cpu | $(pct "$(ratio "$s_puts" "$wrk_rps" "%.4f")") |

- wsup / wrk: **$(pct "$of_wrk")** (goal ≥ 40%: $(check "$of_wrk" '>=' 0.4)); CPU per PUT **$w_cpu µs** (goal ≤ 20: $(check "$w_cpu" '<=' 20))
- wrk's own CPU per request, $wrk_cpu µs, is about the floor for any client here: wrk writes
  prebuilt requests and parses responses in place, so nearly all of it is the kernel's
  loopback TCP (send, wake-up of nginx, receive). wsup spends $(ratio "$w_cpu" "$wrk_cpu" "%.1f")x that; most of
  the difference is libcurl's per-transfer work (about half of wsup's CPU in \`perf\`, bench/PROFILE.md).
- wsup vs the seed: **${vs_seed_puts}x** the PUT/s (goal ≥ 5: $(check "$vs_seed_puts" '>=' 5)) at **1/${vs_seed_cpu}** of the CPU per PUT (goal ≤ 1/5: $(check "$vs_seed_cpu" '>=' 5))
- "Always busy": each uploader's \`classify\` function (it runs on the loop once per response,
  before the uploader decides what comes next) enqueues that uploader's next patch, so a patch is
  pending whenever a PUT completes and the next PUT starts on the next loop turn: one enqueue per
  PUT, no timer, no wasted enqueues, as the seed's send does on completion. Its price, one Lua call
  per response, is inside the wsup figure. The timer variant keeps the sender pure C but enqueues
  into every uploader every 5 ms (most of those coalesce), and an uploader that finishes between
  ticks waits for the next one.
- wsup runs: $runs

Commands: \`wrk -t2 -c1000 -d${WRK_SECONDS}s -s $PEER/put.lua $BASE/worker/1\`;
\`$WSUP bench/fleet.lua $U $TOTAL $BASE [hook|tick 5]\`; \`node $PEER/bench_fleet.mjs $U $TOTAL $PORT\`.
EOF
