#!/bin/sh
# Static checks (make lint); exits non-zero on any finding. Runs every step, then
# prints one line per step and a last line "lint: ok" or "lint: N step(s) failed".
#   gcc    build/lint-gcc:   make all + C tests with gcc (CFLAGS: -Wall -Wextra -Werror),
#                            and scripts/*.c with the same warnings
#   clang  build/lint-clang: the same with clang
#   cppcheck      src test scripts   (options below, suppressions in scripts/lint/)
#   clang-tidy    every .c of src test scripts, one process per file (.clang-tidy)
#   luacheck      lua spec examples bench   (.luacheckrc)
# Usage: scripts/lint.sh [step...]   (default: all five). LINT_CPPFLAGS: the Makefile's
# CPPFLAGS (make lint passes them), else derived from pkg-config.
set -u
cd "$(dirname "$0")/.." || exit 2
steps=${*:-gcc clang cppcheck clang-tidy luacheck}
jobs=$(nproc 2>/dev/null || echo 2)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
LINT_CPPFLAGS=${LINT_CPPFLAGS:-"$(pkg-config --cflags lua5.4 libuv libcurl jansson libmicrohttpd libcrypto 2>/dev/null) -Isrc"}
# shellcheck disable=SC2012 # our file names have no blanks; the lists are split on purpose below
C_FILES=$(ls src/*.c test/*.c scripts/*.c 2>/dev/null)
# shellcheck disable=SC2012
TESTS=$(ls test/test_*.c 2>/dev/null | sed 's|^test/\(.*\)\.c$|\1|')
failed=0 summary=""

note() { # step status
  summary="$summary$(printf '%-11s %s' "$1" "$2")
"
  [ "$2" = ok ] || failed=$((failed + 1))
}

# The helpers in scripts/ (make check-asan builds them) get the same warnings.
scripts_c() { # compiler
  for f in scripts/*.c; do
    [ -e "$f" ] || continue
    "$1" -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -fsyntax-only "$f" || return 1
  done
}

# -Werror makes any warning an error; -k reports every file, not just the first.
build() { # compiler
  dir=build/lint-$1
  echo "== $1: make B=$dir CC=$1 (-Wall -Wextra -Werror)"
  # shellcheck disable=SC2046
  if make -k -s -j"$jobs" B="$dir" CC="$1" all $(for t in $TESTS; do printf '%s ' "$dir/$t"; done) \
    >"$tmp/$1.log" 2>&1 && scripts_c "$1" >>"$tmp/$1.log" 2>&1; then
    note "$1" ok
  else
    grep -E 'warning:|error:' "$tmp/$1.log" || cat "$tmp/$1.log"
    note "$1" "FAILED ($(grep -cE 'warning:|error:' "$tmp/$1.log") diagnostics)"
  fi
}

# Only the configuration the compilers see on this platform (x86-64, glibc) is checked:
# with -D given, cppcheck checks just that one, so the predefined macros src/ tests
# are given too. Suppressions, each with its reason: scripts/lint/cppcheck-suppressions.xml,
# and the --suppress options below.
run_cppcheck() {
  echo "== cppcheck"
  # variableScope: declaring at the top of a block is a style this code uses on purpose.
  # clarifyCalculation: flags `x & FLAG ? a : b`, whose precedence is the natural one;
  #   gcc/clang -Wparentheses (in -Wall) already catch the ambiguous mixes.
  # invalidLengthModifierError: reads Lua's own format language (lua_pushfstring and
  #   luaL_error take %I, %d, %s, %f, %p, %c, %U, %%) as printf's; real printf-family
  #   calls are checked by the compilers' -Wformat (in -Wall).
  # shellcheck disable=SC2086
  if cppcheck --std=c11 --enable=warning,style,performance,portability --inline-suppr \
      --error-exitcode=1 --quiet -j"$jobs" \
      -D_GNU_SOURCE -D__BYTE_ORDER__=1234 -D__ORDER_LITTLE_ENDIAN__=1234 -D__SIZEOF_INT128__=16 \
      -Isrc --library=posix,gnu,lua,libcurl,openssl --library=scripts/lint/cppcheck-lua.cfg \
      --suppress-xml=scripts/lint/cppcheck-suppressions.xml \
      --suppress=variableScope --suppress=clarifyCalculation --suppress=invalidLengthModifierError \
      --template='{file}:{line}:{column}: {severity}: {message} [{id}]' \
      $C_FILES >"$tmp/cppcheck.log" 2>&1; then
    note cppcheck ok
  else
    cat "$tmp/cppcheck.log"
    note cppcheck "FAILED ($(grep -c ': \[\|\]$' "$tmp/cppcheck.log") findings)"
  fi
}

# One process per file: clang-tidy 14 carries state between the files of one run
# (its va_list checker then reports vsnprintf calls in later files as using an
# uninitialised va_list). scripts/lint/lua-noreturn.h tells the analyser that Lua's
# error functions do not return. Findings on the exact lines listed in
# scripts/lint/clang-tidy.supp (file, check, source text; each with its reason) are
# dropped; anything else clang-tidy prints as warning or error is a finding.
run_clang_tidy() {
  echo "== clang-tidy"
  # shellcheck disable=SC2016,SC2086 # the sh -c script expands its own $1 $2 $3
  printf '%s\n' $C_FILES | xargs -P "$jobs" -I{} sh -c \
    'clang-tidy --quiet "$1" -- -std=c11 -D_GNU_SOURCE $2 -include scripts/lint/lua-noreturn.h >"$3/tidy.$(echo "$1" | tr / _).log" 2>&1' \
    sh {} "$LINT_CPPFLAGS" "$tmp"
  cat "$tmp"/tidy.*.log >"$tmp/tidy.log"
  # file:line:col: warning|error: message [check] -> keep unless suppressed.
  grep -E '^[^ ]+:[0-9]+:[0-9]+: (warning|error):' "$tmp/tidy.log" | sed "s|^$PWD/||" | sort -u >"$tmp/tidy.found"
  : >"$tmp/tidy.kept"
  while IFS= read -r w; do
    file=${w%%:*}; rest=${w#*:}; line=${rest%%:*}
    check=$(echo "$w" | sed -n 's/.*\[\([^]]*\)\]$/\1/p')
    text=$(sed -n "${line}p" "$file" 2>/dev/null | sed 's/^[[:space:]]*//; s/[[:space:]]*$//')
    if grep -v '^#' scripts/lint/clang-tidy.supp | awk -v f="$file" -v c="$check" -v t="$text" '
        NF >= 3 && $1 == f && $2 == c { s = $0; sub(/^[^ \t]+[ \t]+[^ \t]+[ \t]+/, "", s); sub(/[ \t]+$/, "", s); if (s == t) found = 1 }
        END { exit !found }'; then
      continue
    fi
    echo "$w" >>"$tmp/tidy.kept"
  done <"$tmp/tidy.found"
  if [ -s "$tmp/tidy.kept" ]; then
    # the findings, each with clang-tidy's own explanation (source line, notes)
    while IFS= read -r w; do
      awk -v w="$w" -v pwd="$PWD/" '
        { l = $0; sub(pwd, "", l) }
        l == w { on = 1; print l; next }
        on && l ~ /^[^ ]+:[0-9]+:[0-9]+: (warning|error):/ { on = 0 }
        on && !/warnings generated|Suppressed [0-9]+ warnings|Use -header-filter/ { print l }' "$tmp/tidy.log" | head -n 40
    done <"$tmp/tidy.kept"
    note clang-tidy "FAILED ($(wc -l <"$tmp/tidy.kept") findings)"
  elif grep -qE 'error:|Error while processing' "$tmp/tidy.log"; then
    cat "$tmp/tidy.log"
    note clang-tidy "FAILED (clang-tidy errors)"
  else
    note clang-tidy ok
  fi
}

run_luacheck() {
  echo "== luacheck"
  if luacheck --formatter plain --codes lua spec examples bench >"$tmp/luacheck.log" 2>&1; then
    note luacheck ok
  else
    cat "$tmp/luacheck.log"
    note luacheck "FAILED ($(grep -c ':[0-9]*:[0-9]*:' "$tmp/luacheck.log") findings)"
  fi
}

# A missing tool fails its step (Debian 12: apt-get install clang clang-tidy cppcheck lua-check).
have() { # step tool
  command -v "$2" >/dev/null 2>&1 && return 0
  echo "== $1: $2 is not installed"
  note "$1" "FAILED ($2 is not installed)"
  return 1
}

for s in $steps; do
  case $s in
    gcc | clang) have "$s" "$s" && build "$s" ;;
    cppcheck) have "$s" cppcheck && run_cppcheck ;;
    clang-tidy) have "$s" clang-tidy && run_clang_tidy ;;
    luacheck) have "$s" luacheck && run_luacheck ;;
    *) echo "lint: unknown step $s"; exit 2 ;;
  esac
done

printf '%s' "$summary"
if [ "$failed" -eq 0 ]; then
  echo "lint: ok"
else
  echo "lint: $failed step(s) failed"
  exit 1
fi
