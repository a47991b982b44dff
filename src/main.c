/* main.c: the host. Embeds Lua 5.4 with the wsup module preloaded, runs a script as
 * a task, then runs the loop until no work remains. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lualib.h>

#include "lwsup.h"

int luaopen_wsup_core(lua_State *L);

static const char usage[] =
    "usage: wsup SCRIPT.lua [args...]   run a Lua script on the wsup loop\n"
    "       wsup serve [--host H] [--port N] [--max-body BYTES]   run the reference receiver alone\n"
    "       wsup --version | --help\n";

typedef struct host {
  int status; /* exit status so far */
} host;

/* Lua files live in ../lua beside the binary (the build tree), under the prefix, or
 * in the source tree the binary was built from (other build directories). */
#ifndef WSUP_LUADIR
#define WSUP_LUADIR "/usr/local/share/lua/5.4"
#endif
static void set_paths(lua_State *L, const char *argv0) {
  char exe[PATH_MAX], dir[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  char *slash;
  if (n <= 0) n = (ssize_t)snprintf(exe, sizeof exe, "%s", argv0);
  exe[n < (ssize_t)sizeof exe ? n : (ssize_t)sizeof exe - 1] = '\0';
  snprintf(dir, sizeof dir, "%s", exe);
  if ((slash = strrchr(dir, '/')) != NULL) *slash = '\0';
  lua_getglobal(L, "package");
  lua_pushfstring(L, "%s/../lua/?.lua;%s/../lua/?/init.lua;%s/../share/lua/5.4/?.lua;%s/../share/lua/5.4/?/init.lua;"
                  WSUP_LUADIR "/?.lua;" WSUP_LUADIR "/?/init.lua;", dir, dir, dir, dir);
  lua_getfield(L, -2, "path");
  lua_concat(L, 2);
  lua_setfield(L, -2, "path");
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_wsup_core);
  lua_setfield(L, -2, "wsup_core");
  lua_pop(L, 2);
}

static void set_arg(lua_State *L, char **argv, int argc, int script) {
  lua_createtable(L, argc - script - 1, script + 1);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - script);
  }
  lua_setglobal(L, "arg");
}

static void main_done(lw_task *t, lua_State *L, int st, int nres, void *ud) {
  host *h = ud;
  (void)t;
  if (st != LUA_OK) {
    fprintf(stderr, "wsup: %s\n", lua_tostring(L, -1));
    h->status = 1;
    wl_stop(&lw_getctx(L)->loop);
  }
  lua_pop(L, nres);
}

static int run_script(lua_State *L, host *h, int argc, char **argv, int script) {
  lw_ctx *c;
  int nargs = argc - script - 1;
  lua_getglobal(L, "require");
  lua_pushliteral(L, "wsup");
  if (lw_pcall(L, 1, 1) != LUA_OK) {
    fprintf(stderr, "wsup: %s\n", lua_tostring(L, -1));
    return 1;
  }
  lua_pop(L, 1);
  c = lw_getctx(L);
  if (luaL_loadfile(L, strcmp(argv[script], "-") == 0 ? NULL : argv[script]) != LUA_OK) {
    fprintf(stderr, "wsup: %s\n", lua_tostring(L, -1));
    return 1;
  }
  luaL_checkstack(L, nargs + 1, "too many arguments");
  for (int i = script + 1; i < argc; i++) lua_pushstring(L, argv[i]);
  lw_spawn(c, L, nargs, main_done, h);
  if (h->status == 0) lw_drive(c, L, -1, NULL, NULL);
  return h->status;
}

int main(int argc, char **argv) {
  lua_State *L;
  host h = {0};
  int status;
  if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
    fputs(usage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (strcmp(argv[1], "--version") == 0) {
    printf("wsup %s (%s)\n", WSUP_VERSION, LUA_RELEASE);
    return 0;
  }
  if (strcmp(argv[1], "serve") == 0) return lw_serve(argc - 1, argv + 1);
  if (argv[1][0] == '-' && argv[1][1] != '\0') {
    fprintf(stderr, "wsup: unknown option '%s'\n%s", argv[1], usage);
    return 2;
  }
  if (!(L = luaL_newstate())) {
    fputs("wsup: cannot create a Lua state\n", stderr);
    return 1;
  }
  luaL_openlibs(L);
  set_paths(L, argv[0]);
  set_arg(L, argv, argc, 1);
  status = run_script(L, &h, argc, argv, 1);
  lua_close(L);
  return status;
}
