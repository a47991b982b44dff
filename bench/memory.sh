#!/bin/sh
# (b) Max RSS with 1, 10 000 and 100 000 uploaders, each with a stalled send and an 8-key
# pending patch: wsup (bench/memory.lua) beside the seed (../shared/peer/bench_memory.mjs),
# both under /usr/bin/time -f %M, medians of the runs. Also RSS per uploader by stage, and
# a check of the state on every uploader. Prints a Markdown section; writes $OUT/memory.env.
# Usage: bench/memory.sh   (env: MEM_RUNS)
set -eu
cd "$(dirname "$0")/.."
. bench/lib.sh

RUNS=${MEM_RUNS:-3}
SIZES="1 10000 100000"
env="$OUT/memory.env"
: >"$env"

# maxrss CMD...: the max RSS in KiB of one run (the command's own output goes to the log).
maxrss() {
  /usr/bin/time -f 'maxrss_kib=%M' -o "$OUT/time.tmp" "$@" >>"$OUT/memory.log" 2>&1 || {
    log "memory: failed: $*"
    echo n/a
    return 0
  }
  field maxrss_kib <"$OUT/time.tmp"
}

for U in $SIZES; do
  log "memory: U=$U"
  : >"$OUT/mem_w_$U" && : >"$OUT/mem_s_$U"
  r=1
  while [ "$r" -le "$RUNS" ]; do
    maxrss "$WSUP" bench/memory.lua "$U" >>"$OUT/mem_w_$U"
    if have_node; then maxrss node "$PEER/bench_memory.mjs" "$U" >>"$OUT/mem_s_$U"; fi
    r=$((r + 1))
  done
  kv "$env" "MEM_W_$U" "$(grep -v n/a "$OUT/mem_w_$U" | median)"
  kv "$env" "MEM_S_$U" "$( [ -s "$OUT/mem_s_$U" ] && grep -v n/a "$OUT/mem_s_$U" | median || echo n/a)"
done
# The base of a process that makes requests: libcurl and its dependencies are loaded.
: >"$OUT/mem_w_http"
r=1
while [ "$r" -le "$RUNS" ]; do
  maxrss "$WSUP" bench/memory.lua 1 http >>"$OUT/mem_w_http"
  r=$((r + 1))
done
kv "$env" MEM_W_HTTP "$(grep -v n/a "$OUT/mem_w_http" | median)"
# shellcheck disable=SC1090
. "$env"

# The state is what it should be on every one of 100 000 uploaders (a separate run: the check allocates).
log "memory: check"
if "$WSUP" bench/memory.lua 100000 check >"$OUT/memory_check.log" 2>&1; then check_ok=yes; else check_ok="**no**"; fi
check_line=$(cat "$OUT/memory_check.log")

# Where the bytes go: VmRSS and Lua heap at each stage, 100 000 uploaders, one run each.
log "memory: stages"
stage_rows=""
prev_rss="" prev_lua=""
for S in 1 2 3 4; do
  line=$("$WSUP" bench/memory.lua 100000 "$S")
  rss=$(echo "$line" | field vmrss_kib) lua=$(echo "$line" | field lua_kib)
  base_rss=${MEM_W_1:-0}
  if [ -z "$prev_rss" ]; then d_rss=$(awk -v a="$rss" -v b="$base_rss" 'BEGIN { printf "%.0f", (a - b) * 1024 / 100000 }')
  else d_rss=$(awk -v a="$rss" -v b="$prev_rss" 'BEGIN { printf "%.0f", (a - b) * 1024 / 100000 }'); fi
  if [ -z "$prev_lua" ]; then d_lua=$(awk -v a="$lua" 'BEGIN { printf "%.0f", a * 1024 / 100000 }')
  else d_lua=$(awk -v a="$lua" -v b="$prev_lua" 'BEGIN { printf "%.0f", (a - b) * 1024 / 100000 }'); fi
  case $S in
  1) what="uploader created (\`wsup.uploader{send=...}\`)" ;;
  2) what="+ first patch pending (2 keys)" ;;
  3) what="+ that patch in flight: the stalled send (a task)" ;;
  4) what="+ 8-key patch pending (the full state)" ;;
  esac
  stage_rows="$stage_rows| $S | $what | $(fmt_int "$rss") | $d_rss | $d_lua |
"
  prev_rss=$rss prev_lua=$lua
done

# The floor set by the contract (#2: a send policy runs as a task and gets a fresh table and
# the JSON text), with no uploader at all: a suspended coroutine holding both.
floor=$("$WSUP" bench/memory.lua 100000 floor | field lua_bytes_per_send)
kv "$env" MEM_FLOOR "${floor:-n/a}"

per() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a == "n/a" || b == "n/a") print "n/a"; else printf "%.0f", (a - b) * 1024 / 100000 }'; }
mib() { awk -v a="$1" 'BEGIN { if (a == "" || a == "n/a") print "n/a"; else printf "%.1f", a / 1024 }'; }
w_per=$(per "$MEM_W_100000" "$MEM_W_1")
s_per=$(per "$MEM_S_100000" "$MEM_S_1")
w_base=$(mib "$MEM_W_1")
s_base=$(mib "$MEM_S_1")
kv "$env" MEM_W_PER "$w_per"
kv "$env" MEM_S_PER "$s_per"
kv "$env" MEM_W_BASE "$w_base"
kv "$env" MEM_S_BASE "$s_base"
kv "$env" MEM_CHECK "$check_ok"

cat <<EOF
## (b) Memory: uploaders with a stalled send and an 8-key pending patch

Each uploader first gets \`{worker_status = "idle", external_metadata = {w = i}}\`, whose send
starts and never returns, then \`{worker_status = "busy", external_metadata = {key0 .. key7 =
"value-k-i"}}\`, which stays pending (as \`bench_memory.mjs\`; see bench/memory.lua for why the
order of steps differs but the end state is the same). Max RSS from \`/usr/bin/time -f %M\`,
median of $RUNS runs, in KiB.

| uploaders | wsup max RSS (KiB) | seed max RSS (KiB) |
|---:|---:|---:|
| 1 | $(fmt_int "$MEM_W_1") | $(fmt_int "$MEM_S_1") |
| 10 000 | $(fmt_int "$MEM_W_10000") | $(fmt_int "$MEM_S_10000") |
| 100 000 | $(fmt_int "$MEM_W_100000") | $(fmt_int "$MEM_S_100000") |
| **base** (1 uploader) | **$w_base MiB** (goal < 5: $(check "$w_base" '<' 5)) | $s_base MiB |
| base of a process that makes requests (+ 1 url uploader: libcurl loaded) | $(mib "$MEM_W_HTTP") MiB | (the seed's fetch is built in) |
| **per uploader** (RSS(100k) − RSS(1)) / 100k | **$w_per B** (goal ≤ 400: $(check "$w_per" '<=' 400)) | $s_per B |

The goal cannot be met with a Lua send policy: by contract a send runs as a task (a Lua
coroutine) and receives the payload as a fresh table and as JSON text, and those alone, with
no uploader around them, take **${floor:-n/a} B** of Lua heap per stalled send
(\`bench/memory.lua 100000 floor\`: a suspended coroutine holding a 2-key table and its JSON;
Lua 5.4 gives every thread at least 40 stack slots).

State check on 100 000 uploaders (every one has a send in flight and exactly the 8-key patch
pending): $check_ok — \`$check_line\`

Where wsup's bytes go, 100 000 uploaders, one run per stage (VmRSS after a full GC; bytes per
uploader added by each stage, in RSS and in the Lua heap, \`collectgarbage("count")\`; the rest is
C heap and allocator slack):

| stage | state | VmRSS (KiB) | + RSS B/uploader | + Lua heap B/uploader |
|---:|---|---:|---:|---:|
$(printf %s "$stage_rows")

wsup loads libcurl, libmicrohttpd and libcrypto on first use (src/dl.h), so the base above,
whose sends are Lua functions, maps none of them; a process with a \`url\` uploader or
\`wsup pipe\` does, as the second base line shows.

Commands: \`/usr/bin/time -f %M $WSUP bench/memory.lua U [stage|http]\`;
\`/usr/bin/time -f %M node $PEER/bench_memory.mjs U\`; \`$WSUP bench/memory.lua 100000 check\`.
EOF
