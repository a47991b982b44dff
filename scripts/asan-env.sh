# asan-env.sh: sourced by scripts/test.sh when ASAN=1 (make check-asan). Sets up a run
# of the whole suite against the sanitizer build in $B (default build/asan, made by
# make check-asan with -fsanitize=address,undefined), from the repository root.
#
# - Stock lua5.4 is not instrumented, so the sanitizer runtimes are preloaded into it,
#   and only into it: a lua5.4 wrapper put first on PATH (busted --lua=lua5.4 and the
#   specs' child lua5.4 both find it) preloads libasan, libubsan and $B/preload.so
#   (scripts/asan_preload.c), which takes LD_PRELOAD out of the environment again so
#   that sh, curl, nginx, sleep... run normally. build/wsup links the runtimes itself.
# - The specs name build/wsup and build/?.so, so the suite runs from $B/root, a shadow
#   of the repository (symlinks) whose `build` is $B: the build/wsup the specs spawn is
#   the sanitizer build too, and a normal build in build/ is neither needed nor used.
# - Reports from lua5.4 and from every build/wsup it starts go to files in $B/reports
#   (log_path; the specs often capture or discard a child's stderr); asan_collect, run
#   at the end, prints them and counts each file as one failure. The C tests report
#   on stderr and exit non-zero, which scripts/test.sh already counts.
# After sourcing, the current directory is $B/root.

B=${B:-build/asan}
top=$PWD
case $B in /*) ;; *) B=$top/$B ;; esac
cc=${ASAN_CC:-gcc} # the compiler that built $B: its runtimes are the ones to preload
asan_rt=$($cc -print-file-name=libasan.so)
ubsan_rt=$($cc -print-file-name=libubsan.so)
real_lua=$(command -v lua5.4)
for f in "$asan_rt" "$ubsan_rt" "$real_lua" "$B/wsup" "$B/wsup_core.so"; do
  [ -e "$f" ] || { echo "asan: missing $f (run make check-asan)"; exit 2; }
done

# Options given in the environment come after these defaults, so they win.
# quarantine_size_mb=16 (default 256): freed memory is kept poisoned, to catch use
# after free, in a FIFO of this size; 256 MB fills during spec/memory_spec.lua's
# 10^6 enqueues and shows up as RSS growth, which that spec rightly fails.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:detect_stack_use_after_return=1\
:quarantine_size_mb=16${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export LSAN_OPTIONS="suppressions=$top/scripts/lsan.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"

$cc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror -shared -fPIC -o "$B/preload.so" scripts/asan_preload.c || exit 2
reports=$B/reports
rm -rf "${reports:?}" "${B:?}/root" "${B:?}/bin"
mkdir -p "$reports" "$B/root" "$B/bin"
# Real directories holding symlinks to the files (cp -rs), so that paths like
# examples/spec/../../build/wsup stay inside the shadow too.
for f in * .busted; do
  case $f in build | .git) continue ;; esac
  [ -e "$f" ] && cp -rs "$top/$f" "$B/root/"
done
ln -s .. "$B/root/build"
export WSUP_BIN="$B/wsup" # examples/spec honours it
cat >"$B/bin/lua5.4" <<WRAP
#!/bin/sh
# lua5.4 with the sanitizer runtimes preloaded; written by scripts/asan-env.sh.
export ASAN_OPTIONS="\$ASAN_OPTIONS:log_path=$reports/asan"
export UBSAN_OPTIONS="\$UBSAN_OPTIONS:log_path=$reports/ubsan"
LD_PRELOAD="$asan_rt $ubsan_rt $B/preload.so" exec "$real_lua" "\$@"
WRAP
chmod +x "$B/bin/lua5.4"
PATH=$B/bin:$PATH
export PATH
cd "$B/root" || exit 2

# Prints the sanitizer reports left in $reports; each file (one process) is a failure.
asan_collect() {
  n=0
  for r in "$reports"/*; do
    [ -f "$r" ] || continue
    n=$((n + 1))
    echo "sanitizer report ${r#"$top"/}:"
    cat "$r"
  done
  [ "$n" -eq 0 ] || echo "asan: $n process(es) reported errors or leaks"
  failed=$((failed + n))
}
