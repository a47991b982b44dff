/* main.c: the host. Embeds Lua 5.4 with the wsup module preloaded, runs a script as
 * a task, runs the loop while the script has work, then drains the uploaders within
 * a deadline. Exit status: 0 all delivered, 1 script error, 2 usage, 3 undelivered. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lualib.h>

#include "lwsup.h"

int luaopen_wsup_core(lua_State *L);

static const char usage[] =
    "usage: wsup [-v|-q] [--drain-ms N] SCRIPT.lua [args...]   run a Lua script on the wsup loop\n"
    "       wsup pipe --url URL [--header 'K: V']... [--base-delay-ms N] [--max-delay-ms N]\n"
    "                 [--jitter-ms N] [--timeout-ms N] [--drain-ms N] [--max-line BYTES]\n"
    "                 [--ca-file PEM]\n"
    "                 PUT each JSON line of stdin\n"
    "       wsup serve [--host H] [--port N] [--max-body BYTES]   run the reference receiver alone\n"
    "       wsup test [busted args...]   run busted with wsup on its paths\n"
    "       wsup --version | --help\n";

/* Lua files live in ../lua beside the binary (the build tree), under the prefix, or
 * in the source tree the binary was built from (other build directories). */
#ifndef WSUP_LUADIR
#define WSUP_LUADIR "/usr/local/share/lua/5.4"
#endif

typedef struct host {
  lw_ctx *c;
  int status;        /* 1 after a script error; else the main chunk's integer result */
  int signals;       /* SIGINT/SIGTERM seen */
  int stopping;      /* the host took a signal over: producers stop, uploaders drain */
  int draining;      /* the final drain is under way: a first signal lets it go on */
  int main_ended;    /* the main chunk's task ran its done callback */
  lw_task *main_task; /* borrowed; valid while !main_ended */
  uv_signal_t *sig[2];
} host;

/* The directory of this binary, from /proc (argv0 when that fails). */
static void exe_dir(char *dir, size_t n, const char *argv0) {
  char exe[PATH_MAX];
  ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
  char *slash;
  if (len <= 0) len = (ssize_t)snprintf(exe, sizeof exe, "%s", argv0);
  exe[len < (ssize_t)sizeof exe ? len : (ssize_t)sizeof exe - 1] = '\0';
  snprintf(dir, n, "%s", exe);
  if ((slash = strrchr(dir, '/')) != NULL) *slash = '\0';
}

/* Where wsup's Lua files are looked for, ending in ';': the script host and `wsup test`. */
static void lua_dirs(char *out, size_t n, const char *dir) {
  snprintf(out, n,
           "%s/../lua/?.lua;%s/../lua/?/init.lua;%s/../share/lua/5.4/?.lua;%s/../share/lua/5.4/?/init.lua;"
           WSUP_LUADIR "/?.lua;" WSUP_LUADIR "/?/init.lua;", dir, dir, dir, dir);
}

static void set_paths(lua_State *L, const char *argv0) {
  char dir[PATH_MAX], path[8 * PATH_MAX];
  exe_dir(dir, sizeof dir, argv0);
  lua_dirs(path, sizeof path, dir);
  lua_getglobal(L, "package");
  lua_pushstring(L, path);
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

/* Closes the <close> variables the main chunk left open: a coroutine that raised, or that
 * a signal left waiting, does not close them itself (stock lua5.4 runs the chunk under
 * pcall, which does). An error in a __close is reported. */
static void close_main(host *h, lua_State *co, int failed) {
  if (lua_resetthread(co) != LUA_OK && !failed) {
    lw_log(h->c, 0, "script", "%s", lua_isstring(co, -1) ? lua_tostring(co, -1) : "error in __close");
    h->status = 1;
  }
}

static void main_done(lw_task *t, lua_State *L, int st, int nres, void *ud) {
  host *h = ud;
  h->main_ended = 1;
  if (st != LUA_OK) {
    lw_log(h->c, 0, "script", "%s", lua_tostring(L, -1));
    h->status = 1;
    close_main(h, t->co, 1);
  } else if (nres >= 1 && lua_type(L, -nres) == LUA_TNUMBER) {
    /* An integer, or a float with an integral value (3.0, 2^3), compared as a double (any
     * integer past 255 stays past it); exit() keeps 8 bits, so anything outside 0..255 is
     * 255: 256 would read as success. */
    lua_Number x = lua_tonumber(L, -nres);
    if (lua_isinteger(L, -nres) || x == floor(x)) h->status = x >= 0 && x <= 255 ? (int)x : 255;
  }
  lua_pop(L, nres);
}

/* The script's own work is over: what is left belongs to uploaders. */
static int script_idle(void *ud) {
  host *h = ud;
  lw_ctx *c = h->c;
  return h->stopping || (c->ntasks <= c->send_tasks && c->user_timers == 0 && c->producers == 0);
}

static int drained(void *ud) { return lw_uploaders_idle(ud); }

static void on_signal(uv_signal_t *s, int signum) {
  host *h = s->data;
  if (++h->signals > 1) { /* a second signal: leave now */
    h->c->interrupted = 1; /* what is undelivered was cut short, not out of time */
    int n = lw_report_undelivered(h->c);
    fflush(NULL);
    _exit(h->status ? h->status : n ? 3 : 0);
  }
  if (h->c->user_signals[signum == SIGINT ? 0 : 1]) return; /* the script handles the first one */
  h->stopping = 1;
  if (h->draining) { /* what the signal asks for is under way: stopping the loop would end the drain */
    lw_log(h->c, 2, "wsup", "%s: draining uploaders (again to exit at once)", signum == SIGINT ? "SIGINT" : "SIGTERM");
    return;
  }
  lw_log(h->c, 2, "wsup", "%s: stopping producers and draining uploaders (again to exit at once)",
         signum == SIGINT ? "SIGINT" : "SIGTERM");
  wl_stop(&h->c->loop); /* ends a wsup.run() nested in the script, too */
}

static void free_handle(uv_handle_t *hd) { free(hd); }

/* libuv runs signal watchers from the loop, so a script busy in Lua, or blocked outside the
 * loop (io.read), would never see them. This handler runs first and passes each SIGINT and
 * SIGTERM on to libuv's; on the second it also sets an alarm: should the loop not have ended
 * the process a second later (on_signal does it at once when it can run), the alarm does,
 * with 128 + the signal. A signal handler gets no user data, hence these statics (as lua.c's
 * globalL); they hold only what the handlers need. */
static struct sigaction uv_action[2];
static volatile sig_atomic_t raw_signals, last_signal;

static void on_alarm(int signum) {
  (void)signum;
  _exit(128 + last_signal);
}

static void on_raw_signal(int signum, siginfo_t *si, void *uc) {
  const struct sigaction *uv = &uv_action[signum == SIGINT ? 0 : 1];
  last_signal = signum;
  if (++raw_signals == 2) alarm(1);
  if (uv->sa_flags & SA_SIGINFO) uv->sa_sigaction(signum, si, uc);
  else if (uv->sa_handler != SIG_DFL && uv->sa_handler != SIG_IGN) uv->sa_handler(signum);
}

static void signals(host *h, int on) {
  static const int nums[2] = {SIGINT, SIGTERM};
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sigfillset(&sa.sa_mask);
  if (on) {
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
  }
  for (int i = 0; i < 2; i++) {
    if (on) {
      if (!(h->sig[i] = malloc(sizeof *h->sig[i]))) continue;
      uv_signal_init(&h->c->loop.uv, h->sig[i]);
      h->sig[i]->data = h;
      uv_signal_start(h->sig[i], on_signal, nums[i]);
      uv_unref((uv_handle_t *)h->sig[i]); /* listening is not work */
      sa.sa_sigaction = on_raw_signal;
      sa.sa_flags = SA_SIGINFO | SA_RESTART;
      sigaction(nums[i], &sa, &uv_action[i]); /* in front of libuv's */
    } else if (h->sig[i]) {
      sigaction(nums[i], &uv_action[i], NULL);
      uv_close((uv_handle_t *)h->sig[i], free_handle);
      h->sig[i] = NULL;
    }
  }
}

/* Pushes the main function: a script file, or the Lua side of a subcommand. */
static int load_main(lua_State *L, const char *cmd, const char *script) {
  if (cmd) {
    lua_pushfstring(L, "return require('wsup.%s').main(...)", cmd);
    return luaL_loadbuffer(L, lua_tostring(L, -1), lua_rawlen(L, -1), cmd) == LUA_OK ? (lua_remove(L, -2), 0) : -1;
  }
  return luaL_loadfile(L, strcmp(script, "-") == 0 ? NULL : script) == LUA_OK ? 0 : -1;
}

static int run(lua_State *L, host *h, const char *cmd, int argc, char **argv, int first) {
  lw_ctx *c;
  int undelivered;
  lua_getglobal(L, "require");
  lua_pushliteral(L, "wsup");
  if (lw_pcall(L, 1, 1) != LUA_OK) {
    fprintf(stderr, "wsup: %s\n", lua_tostring(L, -1));
    return 1;
  }
  lua_pop(L, 1);
  c = h->c = lw_getctx(L);
  if (load_main(L, cmd, argv[first]) != 0) {
    fprintf(stderr, "wsup: %s\n", lua_tostring(L, -1));
    return 1;
  }
  luaL_checkstack(L, argc + 1, "too many arguments");
  for (int i = first + 1; i < argc; i++) lua_pushstring(L, argv[i]);
  signals(h, 1);
  h->main_task = lw_spawn(c, L, argc - first - 1, main_done, h);
  lw_drive(c, L, -1, script_idle, h);
  if (h->stopping) lw_stop_producers(c);
  c->loop.stop = 0; /* a signal's wl_stop must not cut the drain short */
  h->draining = 1;
  if (!lw_uploaders_idle(c)) lw_drive(c, L, wl_now(&c->loop) + c->drain_ms, drained, c);
  if (!h->main_ended) { /* a signal ended the script while its main chunk waited */
    lw_task *t = h->main_task;
    wl_timer_stop(&c->loop, &t->timer); /* nothing resumes it afterwards */
    wl_cancel(&c->loop, &t->job);
    h->main_ended = 1;
    close_main(h, t->co, 0);
  }
  undelivered = lw_report_undelivered(c);
  signals(h, 0);
  if (h->status) return h->status;
  return undelivered ? 3 : 0;
}

int lw_test(int argc, char **argv); /* below */

/* A closed stdin, stdout or stderr would be reused by the next open(), libuv's own
 * descriptors included: keep 0-2 taken, by /dev/null if need be. */
static void hold_std_fds(void) {
  for (int fd = 0; fd <= 2; fd++)
    if (fcntl(fd, F_GETFD) < 0 && open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY) != fd) _exit(1);
}

int main(int argc, char **argv) {
  lua_State *L;
  host h = {0};
  const char *cmd = NULL;
  int first = 1, status, level = 2;
  int64_t drain = -1;
  hold_std_fds();
  while (first < argc && argv[first][0] == '-' && argv[first][1] != '\0') {
    const char *a = argv[first];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      fputs(usage, stdout);
      return 0;
    } else if (strcmp(a, "--version") == 0) {
      printf("wsup %s (%s)\n", WSUP_VERSION, LUA_RELEASE);
      return 0;
    } else if (strcmp(a, "-v") == 0) {
      level++;
    } else if (strcmp(a, "-q") == 0) {
      level--;
    } else if (strcmp(a, "--drain-ms") == 0) {
      char *end;
      const char *v = first + 1 < argc ? argv[++first] : NULL;
      if (!v) {
        fprintf(stderr, "wsup: --drain-ms needs a value\n%s", usage);
        return 2;
      }
      errno = 0;
      drain = strtoll(v, &end, 10);
      if (!*v || *end || errno || drain < 0) {
        fprintf(stderr, "wsup: --drain-ms takes a number of ms\n%s", usage);
        return 2;
      }
      if (drain > LW_MS_MAX) drain = LW_MS_MAX; /* as wsup.drain_ms(): no overflow later */
    } else {
      fprintf(stderr, "wsup: unknown option '%s'\n%s", a, usage);
      return 2;
    }
    first++;
  }
  if (first >= argc) {
    fputs(usage, stderr);
    return 2;
  }
  if (strcmp(argv[first], "serve") == 0) return lw_serve(argc - first, argv + first);
  if (strcmp(argv[first], "test") == 0) return lw_test(argc - first, argv + first);
  if (strcmp(argv[first], "pipe") == 0) cmd = "pipe";
  if (!(L = luaL_newstate())) {
    fputs("wsup: cannot create a Lua state\n", stderr);
    return 1;
  }
  luaL_openlibs(L);
  set_paths(L, argv[0]);
  set_arg(L, argv, argc, first);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "wsup_core");
  lua_call(L, 1, 0);
  {
    lw_ctx *c = lw_getctx(L);
    c->log_level = level < 0 ? 0 : level > 3 ? 3 : level;
    if (drain >= 0) c->drain_ms = drain;
  }
  status = run(L, &h, cmd, argc, argv, first);
  lua_close(L);
  return status;
}

/* Sets var to mine (ending in ';') followed by the user's own path: var, else fallback, else
 * ";", which makes ";;" (Lua's defaults). 0, or -1 out of memory. */
static int prepend_path(const char *var, const char *fallback, const char *mine) {
  const char *user = getenv(var);
  size_t n;
  char *p;
  int rc;
  if (!user) user = getenv(fallback);
  if (!user) user = ";";
  n = strlen(mine) + strlen(user) + 1;
  if (!(p = malloc(n))) return -1;
  snprintf(p, n, "%s%s", mine, user);
  rc = setenv(var, p, 1);
  free(p);
  return rc;
}

/* `wsup test [busted args]`: busted under Lua 5.4 with wsup's Lua files and module
 * on its paths, so a user's own specs can `require "wsup"` from any folder. */
int lw_test(int argc, char **argv) {
  char dir[PATH_MAX], mine[8 * PATH_MAX];
  char **args;
  int k = 0;
  exe_dir(dir, sizeof dir, argv[0]);
  /* Through the environment: busted re-runs itself under --lua via sh, unquoted, so paths
   * with ';' cannot travel as arguments. */
  lua_dirs(mine, sizeof mine, dir);
  if (prepend_path("LUA_PATH_5_4", "LUA_PATH", mine) != 0) return 1;
  snprintf(mine, sizeof mine, "%s/?.so;%s/../lib/lua/5.4/?.so;", dir, dir);
  if (prepend_path("LUA_CPATH_5_4", "LUA_CPATH", mine) != 0) return 1;
  if (!(args = calloc((size_t)argc + 6, sizeof *args))) return 1;
  args[k++] = "busted";
  args[k++] = "--lua=lua5.4";
  for (int i = 1; i < argc; i++) args[k++] = argv[i];
  args[k] = NULL;
  execvp("busted", args);
  perror("wsup test: busted");
  free(args);
  return 2;
}
