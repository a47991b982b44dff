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
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

typedef void (*set_death_callback_fn)(void (*)(void));

static void flush_all(void) { fflush(NULL); }

__attribute__((constructor)) static void init(void) {
  /* __sanitizer_set_death_callback (sanitizer/common_interface_defs.h), looked up so
   * that this library still loads, and does the rest, without libasan. */
  set_death_callback_fn set_death_callback;
  *(void **)&set_death_callback = dlsym(RTLD_DEFAULT, "__sanitizer_set_death_callback");
  unsetenv("LD_PRELOAD");
  atexit(flush_all);
  if (set_death_callback) set_death_callback(flush_all);
}

int dlclose(void *handle) {
  (void)handle;
  return 0;
}
