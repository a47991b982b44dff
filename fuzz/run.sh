#!/bin/sh
# fuzz/run.sh TARGET...: links and runs the libFuzzer targets (called by `make fuzz`,
# which builds the instrumented core objects into build/fuzz/obj first).
#
# For each target T (fuzz/fuzz_T.c):
#   1. links build/fuzz/fuzz_T (clang, -fsanitize=fuzzer,address,undefined, -Werror);
#   2. replays fuzz/regressions/T/* (files named strict-* only with FUZZ_STRICT=1);
#   3. fuzzes for FUZZ_SECONDS on fuzz/corpus/T (new inputs land in build/fuzz/work/T),
#      log in build/fuzz/log/T.log;
#   4. on a crash, copies the reproducer into fuzz/regressions/T/ and says how to rerun it;
#   5. keeps the seeds (fuzz/corpus/T/seed-*, see fuzz/seeds.py) and replaces the other
#      inputs by the fewest of corpus + new inputs that add coverage beyond the seeds
#      (edges only: -use_counters=0; inputs capped at -max_len), so the corpus stays small.
# Exits 1 if any target crashed or any regression still fails.
# Environment: CPPFLAGS, LIBS (from the Makefile), FUZZ_SECONDS (default 60), FUZZ_STRICT.
set -u
cd "$(dirname "$0")/.." || exit 2
B=build/fuzz
secs=${FUZZ_SECONDS:-60}
: "${CPPFLAGS:=$(pkg-config --cflags libuv libcurl jansson libmicrohttpd libcrypto) -Isrc}"
: "${LIBS:=$(pkg-config --libs libuv jansson) -ldl -lm}"
CFLAGS_F="-std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -O1 -g -fno-omit-frame-pointer \
-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all"
OBJS=$(ls src/*.c | sed -n 's|^src/\([^l][^/]*\)\.c$|'$B'/obj/\1.o|p' | grep -v '/main\.o$')
failed=0
summary=""
mkdir -p $B/log $B/work $B/artifacts $B/merged $B/old

max_len() {
  case $1 in
    coalesce) echo 1024 ;;
    receiver) echo 2048 ;;
    *) echo 2048 ;;
  esac
}

dict() {
  case $1 in
    json|fold) echo "-dict=fuzz/dict/json.dict" ;;
    receiver) echo "-dict=fuzz/dict/http.dict" ;;
    *) echo "" ;;
  esac
}

kb() { # dir: KB of file contents (what git stores, before compression)
  find "$1" -type f -exec cat {} + 2>/dev/null | wc -c | awk '{ printf "%.1f", $1 / 1024 }'
}

newer() { # file dep...: whether any dep is newer than file (or file is missing)
  _f=$1; shift
  [ -e "$_f" ] || return 0
  for _d in "$@"; do [ "$_d" -nt "$_f" ] && return 0; done
  return 1
}

for t in "$@"; do
  bin=$B/fuzz_$t
  if [ ! -f fuzz/fuzz_$t.c ]; then
    echo "fuzz: no fuzz/fuzz_$t.c" >&2
    failed=1
    continue
  fi
  if newer "$bin" fuzz/fuzz_$t.c fuzz/common.h $OBJS; then
    echo "== link $bin"
    # shellcheck disable=SC2086
    if ! clang $CFLAGS_F $CPPFLAGS -Ifuzz -o "$bin" fuzz/fuzz_$t.c $OBJS $LIBS -lpthread; then
      failed=1
      summary="$summary$(printf '%-9s link FAILED' "$t")
"
      continue
    fi
  fi
  mkdir -p fuzz/corpus/$t fuzz/regressions/$t

  # 2. regressions: each must pass now
  for f in fuzz/regressions/$t/*; do
    [ -f "$f" ] || continue
    case $(basename "$f") in
      README*|*.md|*.txt) continue ;;
      strict-*) [ -n "${FUZZ_STRICT:-}" ] && [ "${FUZZ_STRICT:-}" != 0 ] || continue ;;
    esac
    if ! "$bin" "$f" >$B/log/$t.regression.log 2>&1; then
      echo "fuzz: $t: regression $f still fails:" >&2
      grep -m1 -E 'fuzz check failed|ERROR: (Address|Leak|Undefined)|runtime error' -A1 $B/log/$t.regression.log >&2
      failed=1
    fi
  done

  # 3. fuzz
  rm -rf $B/work/$t $B/artifacts/$t $B/merged/$t
  mkdir -p $B/work/$t $B/artifacts/$t $B/merged/$t
  echo "== fuzz $t for ${secs}s (log: $B/log/$t.log)"
  # shellcheck disable=SC2046
  "$bin" -max_total_time="$secs" -max_len="$(max_len $t)" -timeout=30 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix=$B/artifacts/$t/ $(dict $t) \
    $B/work/$t fuzz/corpus/$t >$B/log/$t.log 2>&1
  rc=$?
  stats=$(grep -E '^#[0-9]+' $B/log/$t.log | tail -1 | sed 's/^\(#[0-9]*\)[[:space:]]*[A-Z]*[[:space:]]*/\1 /')
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' $B/log/$t.log)
  eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' $B/log/$t.log)

  # 4. a crash becomes a regression
  if [ $rc -ne 0 ]; then
    failed=1
    art=$(ls -t $B/artifacts/$t/ 2>/dev/null | head -1)
    if [ -n "$art" ]; then
      cp "$B/artifacts/$t/$art" fuzz/regressions/$t/
      echo "fuzz: $t CRASHED (exit $rc); reproducer: fuzz/regressions/$t/$art" >&2
      echo "      rerun: $bin fuzz/regressions/$t/$art" >&2
    else
      echo "fuzz: $t exited $rc without a reproducer; see $B/log/$t.log" >&2
    fi
    grep -m1 -E 'fuzz check failed|ERROR: (Address|Leak|Undefined)|runtime error|ERROR: libFuzzer' -A2 $B/log/$t.log >&2
    summary="$summary$(printf '%-9s CRASH  %s' "$t" "fuzz/regressions/$t/$art")
"
  fi

  # 5. merge: the seeds (seed-*) stay as they are; the other inputs are replaced by
  #    the fewest that add coverage beyond them
  cp fuzz/corpus/$t/seed-* $B/merged/$t/ 2>/dev/null
  mkdir -p $B/old/$t && rm -f $B/old/$t/* && find fuzz/corpus/$t -type f ! -name 'seed-*' -exec cp {} $B/old/$t/ \;
  if "$bin" -merge=1 -use_counters=0 -max_len="$(max_len $t)" -timeout=30 -rss_limit_mb=2048 \
      -artifact_prefix=$B/artifacts/$t/ \
      $B/merged/$t $B/old/$t $B/work/$t >$B/log/$t.merge.log 2>&1; then
    find fuzz/corpus/$t -type f ! -name 'seed-*' -exec rm -f {} +
    find $B/merged/$t -type f ! -name 'seed-*' -exec cp {} fuzz/corpus/$t/ \;
  else
    echo "fuzz: $t: merge failed, corpus left as it was (see $B/log/$t.merge.log)" >&2
  fi
  files=$(ls fuzz/corpus/$t | wc -l)
  size=$(kb fuzz/corpus/$t)
  summary="$summary$(printf '%-9s %s; %s execs, %s exec/s; corpus %s files, %s KB' "$t" "$stats" "$execs" "$eps" "$files" "$size")
"
done

printf '%s' "$summary"
total=$(kb fuzz/corpus)
echo "fuzz: corpus total ${total:-0} KB"
if [ $failed -ne 0 ]; then
  echo "fuzz: FAILED (reproducers in fuzz/regressions/)"
  exit 1
fi
echo "fuzz: ok"
