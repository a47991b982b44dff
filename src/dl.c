/* dl.c: see dl.h. */
#include "dl.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

void *dl_open(const char *soname, char *err, size_t errlen) {
  void *lib = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
  if (!lib && err && errlen) snprintf(err, errlen, "cannot load %s: %s", soname, dlerror());
  return lib;
}

int dl_sym(void *lib, const char *name, void *fnp, char *err, size_t errlen) {
  void *p;
  dlerror();
  p = dlsym(lib, name);
  if (!p) {
    if (err && errlen) snprintf(err, errlen, "%s: %s", name, dlerror());
    return -1;
  }
  memcpy(fnp, &p, sizeof p); /* POSIX: a data pointer from dlsym converts to a function pointer */
  return 0;
}
