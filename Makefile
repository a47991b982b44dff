# wsup — see README.md. `make` builds; `make test` and `make run` install what is missing first.
CC      ?= cc
PKGS    := libuv libcurl jansson libmicrohttpd libcrypto
# Linked at start; libcurl, libmicrohttpd and libcrypto are loaded on first use instead
# (src/dl.h: a process that never makes or serves a request skips ~6 MB of RSS), by
# the SONAME of the library compiled against (unquoted: src/dl.h makes it a string).
LINKPKGS := libuv jansson
DLPKGS   := libcurl:CURL libmicrohttpd:MHD libcrypto:CRYPTO
soname   = $(shell objdump -p $(shell pkg-config --variable=libdir $(1) 2>/dev/null)/$(1).so 2>/dev/null | sed -n 's/^ *SONAME *//p')
LUAPKG  := lua5.4
OPT     ?= -O2 -g
SAN     ?=
# Functions stay in .text in link order: gcc otherwise moves cold paths (those ending in
# luaL_error) and cold functions into .text.unlikely, which the linker puts first, so a new
# error path in any file moved the store's hot functions, and enqueues/s with them by 5-10%
# (bench/PROFILE.md). clang does not split them that way (and rejects the first flag).
ifeq ($(findstring clang,$(shell $(CC) --version 2>/dev/null)),)
LAYOUT  ?= -fno-reorder-blocks-and-partition -fno-reorder-functions
endif
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -fPIC $(OPT) $(LAYOUT) $(SAN)
CPPFLAGS += $(shell pkg-config --cflags $(LUAPKG) $(PKGS) 2>/dev/null) -Isrc
DLDEFS   := $(foreach p,$(DLPKGS),$(foreach so,$(call soname,$(word 1,$(subst :, ,$(p)))),-DWSUP_$(word 2,$(subst :, ,$(p)))_SO=$(so)))
CPPFLAGS += $(DLDEFS)
LIBS    := $(shell pkg-config --libs $(LINKPKGS) 2>/dev/null) -ldl -lm
# The C tests talk to the code under test with libcurl and libmicrohttpd directly.
TESTLIBS := $(shell pkg-config --libs libcurl libmicrohttpd 2>/dev/null)
# The host links Lua statically, as upstream's lua interpreter does: the whole archive
# (every API function, exported by scripts/host-exports.list for C modules such as
# cjson.so), placed first so the VM's code sits at the same addresses whatever wsup's
# own code size (a change elsewhere moved the enqueue figure by 5-10% before). Calls
# into and within the VM then go without the PLT and GOT of a shared library: about
# 15% more enqueues/s than with liblua5.4.so (bench (a), A/B; bench/PROFILE.md).
LUA_A   := $(shell pkg-config --variable=libdir $(LUAPKG) 2>/dev/null)/liblua5.4.a
ifneq ($(wildcard $(LUA_A)),)
LUAFIRST := -Wl,--whole-archive $(LUA_A) -Wl,--no-whole-archive
LUALIBS  := -Wl,--dynamic-list=scripts/host-exports.list -lm -ldl
else
LUAFIRST :=
LUALIBS  := $(shell pkg-config --libs $(LUAPKG) 2>/dev/null)
endif
# The host's allocator: linking mimalloc replaces malloc for the whole process. Lua
# scripts churn through small tables (a patch is two), and mimalloc's per-size free
# lists make an enqueue about 7% cheaper than glibc's malloc (bench (a), A/B). Sanitizer
# builds leave it out (HOSTLIBS=), so ASan sees every allocation.
HOSTLIBS ?= -lmimalloc
B       := build

# src/l*.c are the Lua bindings, src/main.c the host; every other src/*.c is the Lua-free core.
CORE_SRC := $(filter-out src/l%.c src/main.c,$(wildcard src/*.c))
BIND_SRC := $(filter src/l%.c,$(wildcard src/*.c))
CORE_OBJ := $(CORE_SRC:src/%.c=$(B)/obj/%.o)
BIND_OBJ := $(BIND_SRC:src/%.c=$(B)/obj/%.o)
TESTS    := $(patsubst test/%.c,$(B)/%,$(wildcard test/test_*.c))
# Each fuzz target, built without libFuzzer, replays its regressions and corpus in make test.
REPLAYS  := $(patsubst fuzz/fuzz_%.c,$(B)/replay_%,$(wildcard fuzz/fuzz_*.c))
LUA_FILES := $(wildcard lua/wsup/*.lua)

.PHONY: all deps test test-c test-lua run clean check-asan lint bench install uninstall
all: $(B)/wsup $(B)/wsup_core.so

# The entry points (test, run, bench, soak, lint, fuzz, check-asan) first install what they
# need, then build in a new make: this one ran pkg-config when it read this file, before the
# -dev packages were there, and on a new machine would link without them.
SUBMAKE = $(MAKE) --no-print-directory
deps:
	@sh scripts/deps.sh build test

$(B)/obj/%.o: src/%.c $(wildcard src/*.h) | $(B)/obj
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(B)/obj/main.o: CPPFLAGS += -DWSUP_LUADIR='"$(CURDIR)/lua"'

$(B)/obj:
	@mkdir -p $@

# The module for stock lua5.4 (require "wsup_core", loaded by lua/wsup/init.lua): symbols of liblua come from the interpreter.
$(B)/wsup_core.so: $(CORE_OBJ) $(BIND_OBJ)
	$(CC) $(CFLAGS) -shared -o $@ $^ $(LIBS) $(LDFLAGS)

# The host links the same objects plus liblua. main.o goes last: it is cold and changes most, and
# in front it moved the store's functions with every change to the CLI (enqueues/s -5 to -10%;
# bench/PROFILE.md).
$(B)/wsup: $(CORE_OBJ) $(BIND_OBJ) $(B)/obj/main.o scripts/host-exports.list
	$(CC) $(CFLAGS) -o $@ $(LUAFIRST) $(filter %.o,$^) $(LUALIBS) $(HOSTLIBS) $(LIBS) $(LDFLAGS)

$(B)/test_%: test/test_%.c $(CORE_OBJ) $(wildcard test/*.h) | $(B)/obj
	$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ $(filter-out %.h,$^) -lcmocka $(LIBS) $(TESTLIBS) $(LDFLAGS)

$(B)/replay_%: fuzz/fuzz_%.c fuzz/replay.c fuzz/common.h $(CORE_OBJ) | $(B)/obj
	$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ $(filter-out %.h,$^) $(LIBS) $(TESTLIBS) $(LDFLAGS)

test:
	@sh scripts/deps.sh build test
	@$(SUBMAKE) all $(TESTS) $(REPLAYS)
	@sh scripts/test.sh

test-c: all $(TESTS) $(REPLAYS)
	@sh scripts/test.sh c

test-lua: all
	@sh scripts/test.sh lua

run:
	@sh scripts/deps.sh build
	@$(SUBMAKE) all
	$(B)/wsup examples/heartbeat.lua 5

lint:
	@# gcc and clang builds (-Werror) into build/lint-*, cppcheck, clang-tidy, luacheck: see scripts/lint.sh.
	@sh scripts/deps.sh build lint
	@$(SUBMAKE) lint-run
.PHONY: lint-run
lint-run:
	@LINT_CPPFLAGS='$(CPPFLAGS)' sh scripts/lint.sh

# Benchmarks beside the seed (../shared/peer): prints a table, writes bench/results.md and bench/enqueue.png.
bench:
	@sh scripts/deps.sh build bench
	@$(SUBMAKE) all
	@sh bench/run.sh

# Fault soak, about 2-3 minutes on 2 cores (see soak/README.md): 200 uploaders x 5000
# patches against a chaotic wsup.receiver, nginx restarts, and both scaled down under
# ASan+UBSan+LSan, from a host built with check-asan's sanitizer flags in its own
# directory. Prints a summary; exits non-zero if a pass condition fails.
.PHONY: soak
soak:
	@sh scripts/deps.sh build test
	@$(SUBMAKE) all
	@$(SUBMAKE) B=build/soak/asan CC=gcc OPT="-O1 -g -fno-omit-frame-pointer" \
	  SAN="-fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=all" HOSTLIBS= build/soak/asan/wsup
	@sh soak/run.sh

check-asan:
	@# Own build dir (normal builds in $(B) stay as they are) and gcc, whose libasan/libubsan
	@# scripts/asan-env.sh preloads into stock lua5.4. float-cast-overflow is not part of
	@# gcc's "undefined". scripts/asan_ubsan_log.c (linked in through LDFLAGS) makes
	@# libubsan honour UBSAN_OPTIONS=log_path. The suite runs against build/asan: see
	@# scripts/asan-env.sh.
	@sh scripts/deps.sh build test
	@mkdir -p build/asan
	@if [ ! build/asan/ubsan_log.o -nt scripts/asan_ubsan_log.c ]; then set -x; \
	  gcc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror -fPIC -c -o build/asan/ubsan_log.o scripts/asan_ubsan_log.c && \
	  rm -f build/asan/wsup build/asan/wsup_core.so build/asan/test_*; fi
	$(MAKE) B=build/asan CC=gcc OPT="-O1 -g -fno-omit-frame-pointer" \
	  SAN="-fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=all" HOSTLIBS= \
	  LDFLAGS="build/asan/ubsan_log.o $(LDFLAGS)" all $(patsubst $(B)/%,build/asan/%,$(TESTS) $(REPLAYS))
	ASAN=1 ASAN_CC=gcc B=build/asan sh scripts/test.sh

clean:
	rm -rf $(B)

# Install layout. Lua module dirs come from lua5.4.pc, made relative to its own prefix
# and rebased under PREFIX. Debian's INSTALL_CMOD has a multiarch part
# (/usr/lib/x86_64-linux-gnu/lua/5.4) that lua5.4 only searches under /usr, not
# /usr/local: it is dropped, giving lib/lua/5.4, which lua5.4 searches under both and
# which `wsup test` puts on busted's cpath. Override LUA_LMOD / LUA_CMOD to choose.
PREFIX   ?= /usr/local
DESTDIR  ?=
BINDIR   ?= $(PREFIX)/bin
MANDIR   ?= $(PREFIX)/share/man
LUA_PCPREFIX := $(shell pkg-config --variable=prefix $(LUAPKG) 2>/dev/null)
LUA_MARCH    := $(shell pkg-config --variable=deb_host_multiarch $(LUAPKG) 2>/dev/null)
LUA_LMOD_REL := $(or $(patsubst $(LUA_PCPREFIX)/%,%,$(shell pkg-config --variable=INSTALL_LMOD $(LUAPKG) 2>/dev/null)),share/lua/5.4)
LUA_CMOD_REL := $(or $(subst /$(LUA_MARCH)/,/,$(patsubst $(LUA_PCPREFIX)/%,%,$(shell pkg-config --variable=INSTALL_CMOD $(LUAPKG) 2>/dev/null))),lib/lua/5.4)
LUA_LMOD ?= $(PREFIX)/$(LUA_LMOD_REL)
LUA_CMOD ?= $(PREFIX)/$(LUA_CMOD_REL)
INSTALL  ?= install

install: all
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LUA_CMOD) $(DESTDIR)$(LUA_LMOD)/wsup $(DESTDIR)$(MANDIR)/man1
	$(INSTALL) -m 755 $(B)/wsup $(DESTDIR)$(BINDIR)/wsup
	$(INSTALL) -m 755 $(B)/wsup_core.so $(DESTDIR)$(LUA_CMOD)/wsup_core.so
	$(INSTALL) -m 644 $(LUA_FILES) $(DESTDIR)$(LUA_LMOD)/wsup/
	$(INSTALL) -m 644 doc/wsup.1 $(DESTDIR)$(MANDIR)/man1/wsup.1

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/wsup $(DESTDIR)$(LUA_CMOD)/wsup_core.so $(DESTDIR)$(MANDIR)/man1/wsup.1
	rm -f $(addprefix $(DESTDIR)$(LUA_LMOD)/wsup/,$(notdir $(LUA_FILES)))
	rmdir $(DESTDIR)$(LUA_LMOD)/wsup 2>/dev/null || true

# libFuzzer targets (fuzz/fuzz_*.c), clang only: the core objects are built with coverage
# and ASan+UBSan into build/fuzz/obj, then fuzz/run.sh links build/fuzz/fuzz_<t> and runs
# each for FUZZ_SECONDS on fuzz/corpus/<t> (see fuzz/README.md). FUZZ_TARGETS picks some.
# Exits non-zero on a crash (or a failing fuzz/regressions input) and names the reproducer.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= coalesce json fold receiver
FUZZ_SAN     := -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all
.PHONY: fuzz fuzz-run
fuzz:
	@sh scripts/deps.sh build fuzz
	@$(SUBMAKE) fuzz-run
fuzz-run:
	@$(SUBMAKE) B=build/fuzz CC=clang OPT="-O1 -g -fno-omit-frame-pointer" SAN="$(FUZZ_SAN)" \
	  $(CORE_SRC:src/%.c=build/fuzz/obj/%.o)
	@CPPFLAGS='$(CPPFLAGS)' LIBS='$(LIBS)' FUZZ_SECONDS='$(FUZZ_SECONDS)' sh fuzz/run.sh $(FUZZ_TARGETS)
