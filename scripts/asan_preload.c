/* asan_preload.c: preloaded after libasan and libubsan into stock lua5.4 by the
 * wrapper that scripts/asan-env.sh writes (make check-asan). Built without
 * sanitizers; touches nothing in src/.
 *
 * - LD_PRELOAD is removed from the environment once the loader has mapped the
 *   runtimes into this process, so the programs the specs spawn (sh, curl, nginx,
 *   sleep, timeout...) run as they normally do: curl, for one, deadlocks in setlocale
 *   under a preloaded libasan, and uninstrumented tools would report their own
 *   leaks. A child lua5.4 gets the runtimes again from the wrapper, which comes first
 *   on PATH; build/wsup is linked with them.
 * - stdio is flushed before a sanitizer ends the process: a leak report ends it with
 *   _exit from an atexit handler, and an error report aborts it, either of which
 *   would lose busted's buffered output (its summary line in particular). Handlers
 *   registered with atexit later run earlier, and libasan registered its leak check
 *   while initialising, before this constructor runs.
 * - dlclose does nothing: lua_close unloads C modules, and LeakSanitizer, which runs
 *   after that, could no longer name the functions of wsup_core.so in its reports.
 */
#include <stdio.h>
#include <stdlib.h>

/* From libasan (sanitizer/common_interface_defs.h); weak, so this still loads alone. */
extern void __sanitizer_set_death_callback(void (*callback)(void)) __attribute__((weak));

static void flush_all(void) { fflush(NULL); }

__attribute__((constructor)) static void init(void) {
  unsetenv("LD_PRELOAD");
  atexit(flush_all);
  if (__sanitizer_set_death_callback) __sanitizer_set_death_callback(flush_all);
}

int dlclose(void *handle) {
  (void)handle;
  return 0;
}
