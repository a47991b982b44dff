/* dl.h: shared libraries loaded on first use (dlopen) instead of at start, so that
 * a process which never makes or serves a request maps none of libcurl's thirty-odd
 * dependencies (about 6 MB of RSS) nor libmicrohttpd's. Lua-free.
 *
 * Each user keeps a struct of typed function pointers (see http.c): the types come
 * from the library's own header through __typeof__, so a mismatch cannot compile,
 * and a table of dl_fn says which symbol goes into which field. */
#ifndef WSUP_DL_H
#define WSUP_DL_H

#include <stddef.h>

/* The Makefile passes sonames unquoted (-DWSUP_CURL_SO=libcurl.so.4), so that they
 * survive being passed on through the environment to the lint tools. */
#define DL_STR_(x) #x
#define DL_STR(x) DL_STR_(x)

typedef struct dl_fn {
  const char *name; /* the symbol */
  size_t off;       /* offsetof the function pointer in the user's struct */
} dl_fn;

/* Opens soname (a handle the process keeps: these libraries register exit handlers,
 * so they are never unloaded) and stores the address of each fns[i].name at
 * (char *)api + fns[i].off. 0; or -1 with a message in err, every pointer of fns
 * then NULL. */
int dl_load(const char *soname, void *api, const dl_fn *fns, size_t n, char *err, size_t errlen);

#endif
