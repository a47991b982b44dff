/* dl.h: shared libraries loaded on first use (dlopen) instead of at start, so that
 * a process which never makes or serves a request maps none of libcurl's thirty-odd
 * dependencies (about 6 MB of RSS) nor libmicrohttpd's. Lua-free.
 *
 * Each user keeps a struct of typed function pointers (see http.c): the types come
 * from the library's own header through __typeof__, so a mismatch cannot compile. */
#ifndef WSUP_DL_H
#define WSUP_DL_H

#include <stddef.h>

/* The Makefile passes sonames unquoted (-DWSUP_CURL_SO=libcurl.so.4), so that they
 * survive being passed on through the environment to the lint tools. */
#define DL_STR_(x) #x
#define DL_STR(x) DL_STR_(x)

/* Opens soname (a handle the process keeps: these libraries register exit
 * handlers, so they are never unloaded). NULL with a message in err. */
void *dl_open(const char *soname, char *err, size_t errlen);

/* Stores the address of symbol name of lib into *fnp, a function pointer. 0, or -1
 * with a message in err. */
int dl_sym(void *lib, const char *name, void *fnp, char *err, size_t errlen);

#endif
