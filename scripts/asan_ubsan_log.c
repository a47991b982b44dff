/* asan_ubsan_log.c: linked into the sanitizer build only (make check-asan passes the
 * object in LDFLAGS, so build/asan/wsup, wsup_core.so and the C tests carry it).
 *
 * With gcc, -fsanitize=address,undefined uses two runtimes, libasan and libubsan,
 * and libubsan then ignores log_path in UBSAN_OPTIONS: its reports always go to
 * stderr, where the specs often capture or discard a child's output. This
 * constructor hands the last log_path of UBSAN_OPTIONS to libubsan itself, so that
 * UBSan reports land in the same report files as ASan's (scripts/asan-env.sh sets
 * log_path for every process that lua5.4 runs; the C tests have none and keep
 * reporting on stderr). */
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

typedef void (*set_report_path_fn)(const char *path);

__attribute__((constructor)) static void ubsan_log_path(void) {
  const char *opts = getenv("UBSAN_OPTIONS"), *p, *last = NULL;
  char path[4096];
  size_t n;
  void *ubsan;
  set_report_path_fn set_report_path;
  for (p = opts; p && (p = strstr(p, "log_path=")) != NULL; p += 9)
    if (p == opts || p[-1] == ':' || p[-1] == ' ') last = p + 9;
  if (!last || (n = strcspn(last, ": ")) == 0 || n >= sizeof path) return;
  memcpy(path, last, n);
  path[n] = '\0';
  if (!(ubsan = dlopen("libubsan.so.1", RTLD_NOW | RTLD_NOLOAD))) return;
  *(void **)&set_report_path = dlsym(ubsan, "__sanitizer_set_report_path");
  if (set_report_path) set_report_path(path);
  dlclose(ubsan);
}
