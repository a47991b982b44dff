/* dl.c: see dl.h. */
#include "dl.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

int dl_load(const char *soname, void *api, const dl_fn *fns, size_t n, char *err, size_t errlen) {
  void *lib = dlopen(soname, RTLD_NOW | RTLD_LOCAL), *p = NULL;
  size_t i = 0;
  if (!lib) {
    if (err && errlen) snprintf(err, errlen, "cannot load %s: %s", soname, dlerror());
    return -1;
  }
  for (; i < n; i++) {
    dlerror();
    if (!(p = dlsym(lib, fns[i].name))) break;
    memcpy((char *)api + fns[i].off, &p, sizeof p); /* POSIX: dlsym's pointer converts to a function pointer */
  }
  if (i == n) return 0;
  if (err && errlen) snprintf(err, errlen, "%s: %s", fns[i].name, dlerror());
  for (i = 0; i < n; i++) memcpy((char *)api + fns[i].off, &p, sizeof p); /* p is NULL here */
  return -1;
}
