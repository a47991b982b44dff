/* lprod.c: producers that feed scripts from the outside world: wsup.lines (a file
 * descriptor or file, read without blocking), wsup.watch (file changes, debounced)
 * and wsup.signal. libuv callbacks only buffer and queue a job; the job runs the
 * Lua function as a task from the loop. Each libuv handle lives in its own malloc'd
 * block, freed by its close callback, so a handle never outlives its memory even
 * when the Lua side is collected first. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lwsup.h"

#define PROD_MT "wsup.producer"
#define READ_CHUNK 65536
#define MAX_LINE_DEFAULT (1 << 20)

typedef enum { P_LINES, P_WATCH, P_SIGNAL } pkind;

typedef struct lw_prod lw_prod;

/* The libuv side: owned by libuv from uv_*_init until its close callback frees it. */
typedef struct pio {
  union {
    uv_handle_t h;
    uv_stream_t s;
    uv_pipe_t pipe;
    uv_tty_t tty;
    uv_signal_t sig;
    uv_fs_event_t ev;
  } u;
  uv_fs_t req;       /* file reads */
  int busy_req;      /* a read request is in flight */
  int has_handle;
  int closing;
  lw_prod *p;        /* NULL once the Lua side is gone */
  char chunk[READ_CHUNK];
} pio;

struct lw_prod {
  lw_ctx *c;
  lw_prod *prev, *next; /* the context's list of active producers */
  pkind kind;
  int self;          /* registry ref while active: the script need not keep the handle */
  int active;
  pio *io;           /* borrowed from libuv while active */
  wl_job job;        /* delivery from the loop */
  wl_timer debounce; /* watch */
  /* lines */
  int fd, own_fd, is_file;
  int64_t offset;
  char *buf;         /* owned: bytes not yet split into lines */
  size_t len, cap, max_line;
  int skipping, eof;
  uint64_t lineno;
  /* signal */
  int signum, pending_signals;
  int64_t debounce_ms;
  char name[PATH_MAX]; /* the path, for watch */
  char base[NAME_MAX + 1]; /* watch: the file's name in its directory; "" to watch a directory */
};

static void io_closed(uv_handle_t *h) {
  pio *io = (pio *)h;
  if (io->busy_req) return; /* the read callback frees it */
  free(io);
}

/* Detaches and closes the libuv side. */
static void io_release(lw_prod *p) {
  pio *io = p->io;
  if (!io) return;
  p->io = NULL;
  io->p = NULL;
  if (io->busy_req) uv_cancel((uv_req_t *)&io->req);
  if (io->has_handle) {
    io->closing = 1;
    uv_close(&io->u.h, io_closed);
  } else if (!io->busy_req) {
    free(io);
  }
}

static unsigned *user_signal(lw_prod *p) {
  if (p->kind != P_SIGNAL || (p->signum != SIGINT && p->signum != SIGTERM)) return NULL;
  return &p->c->user_signals[p->signum == SIGINT ? 0 : 1];
}

static void stop(lw_prod *p) {
  if (!p->active) return;
  p->active = 0;
  p->c->producers--;
  if (p->prev) p->prev->next = p->next;
  else p->c->prods = p->next;
  if (p->next) p->next->prev = p->prev;
  p->prev = p->next = NULL;
  if (user_signal(p)) (*user_signal(p))--;
  io_release(p);
  if (p->c->open) {
    wl_cancel(&p->c->loop, &p->job);
    wl_timer_stop(&p->c->loop, &p->debounce);
  }
  if (p->own_fd && p->fd >= 0) close(p->fd);
  p->fd = -1;
  luaL_unref(p->c->main, LUA_REGISTRYINDEX, p->self);
  p->self = LUA_NOREF;
}

/* Runs the producer's function as a task with the nargs values on L's top. */
static void call(lw_prod *p, lua_State *L, int nargs) {
  luaL_checkstack(L, 2, "producer");
  lua_rawgeti(L, LUA_REGISTRYINDEX, p->self);
  lua_getiuservalue(L, -1, 1);
  lua_remove(L, -2);
  lua_insert(L, -(nargs + 1));
  lw_spawn(p->c, L, nargs, NULL, NULL);
}

/* ---- lines ------------------------------------------------------------------ */

static void read_more(lw_prod *p);

/* Pushes the producer's userdata onto L, where it stays while the producer delivers: a
 * callback may stop it and drop the last reference, and the collector must not free it
 * under the delivery loop. 0 (nothing pushed) when the producer is stopped. */
static int hold(lw_prod *p, lua_State *L) {
  if (!p->active) return 0;
  luaL_checkstack(L, 4, "producer");
  lua_rawgeti(L, LUA_REGISTRYINDEX, p->self);
  return 1;
}

static void split_lines(lw_prod *p, lua_State *L);

static void deliver_lines(void *ud) {
  lw_prod *p = ud;
  lua_State *L = lw_driver(p->c);
  if (!hold(p, L)) return;
  int top = lua_gettop(L);
  split_lines(p, L);
  lua_settop(L, top - 1);
}

static void split_lines(lw_prod *p, lua_State *L) {
  size_t start = 0;
  for (;;) {
    char *nl;
    if (!p->active) return;
    if (start >= p->len) break; /* also: no buffer yet after an empty read */
    nl = memchr(p->buf + start, '\n', p->len - start);
    if (!nl) break;
    size_t n = (size_t)(nl - (p->buf + start));
    if (n && nl[-1] == '\r') n--;                /* CRLF: the CR ends the line, it is not in it */
    p->lineno++;
    if (n > p->max_line) p->skipping = 1;
    if (p->skipping) {
      p->skipping = 0;
      lua_pushboolean(L, 0);
      lua_pushfstring(L, "line %I: longer than %I bytes", (lua_Integer)p->lineno, (lua_Integer)p->max_line);
      call(p, L, 2);
    } else {
      lua_pushlstring(L, p->buf + start, n);
      call(p, L, 1);
    }
    start = (size_t)(nl - p->buf) + 1;
  }
  if (start) memmove(p->buf, p->buf + start, p->len - start);
  p->len -= start;
  if (p->len > p->max_line && p->len - p->max_line > 1) { /* over-long (a CR may end it): drop it, report at its end */
    p->skipping = 1;
    p->len = 0;
  }
  if (p->eof && p->active) {
    if (p->len || p->skipping) { /* a last line without a newline */
      p->buf[p->len++] = '\n';
      wl_defer(&p->c->loop, &p->job, deliver_lines, p);
      return;
    }
    lua_pushnil(L);
    call(p, L, 1); /* fn(nil): the end */
    stop(p);
    return;
  }
  if (p->active) read_more(p);
}

static int grow(lw_prod *p, size_t extra) {
  if (p->cap - p->len >= extra + 1) return 0;
  size_t cap = p->cap ? p->cap : 4096;
  while (cap - p->len < extra + 1) cap *= 2;
  char *b = realloc(p->buf, cap);
  if (!b) return -1;
  p->buf = b;
  p->cap = cap;
  return 0;
}

static void got_bytes(lw_prod *p, const char *data, ssize_t n) {
  if (n > 0) {
    if (grow(p, (size_t)n) != 0) n = -1;
    else {
      memcpy(p->buf + p->len, data, (size_t)n);
      p->len += (size_t)n;
    }
  }
  if (n <= 0) p->eof = 1; /* EOF or an error: both end the stream */
  wl_defer(&p->c->loop, &p->job, deliver_lines, p);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  pio *io = (pio *)h;
  (void)hint;
  *b = uv_buf_init(io->chunk, sizeof io->chunk);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  pio *io = (pio *)s;
  if (!io->p || n == 0) return;
  uv_read_stop(s); /* one chunk at a time: the loop delivers it before reading on */
  got_bytes(io->p, b->base, n == UV_EOF ? 0 : n);
}

static void on_fs_read(uv_fs_t *r) {
  pio *io = r->data;
  ssize_t n = r->result;
  uv_fs_req_cleanup(r);
  io->busy_req = 0;
  if (!io->p) {
    if (!io->closing) free(io);
    return;
  }
  if (n > 0 && io->p->offset >= 0) io->p->offset += n;
  got_bytes(io->p, io->chunk, n);
}

static void read_more(lw_prod *p) {
  pio *io = p->io;
  if (!io || p->eof) return;
  if (p->is_file) {
    uv_buf_t b = uv_buf_init(io->chunk, sizeof io->chunk);
    io->req.data = io;
    if (uv_fs_read(&p->c->loop.uv, &io->req, p->fd, &b, 1, p->offset, on_fs_read) == 0) io->busy_req = 1;
    else got_bytes(p, NULL, -1);
  } else if (uv_read_start(&io->u.s, on_alloc, on_read) != 0) {
    got_bytes(p, NULL, -1);
  }
}

/* Sets up reading; returns NULL, or a message for an outside-world failure. */
static const char *open_lines(lua_State *L, lw_prod *p) {
  uv_loop_t *uv = &p->c->loop.uv;
  struct stat sb;
  pio *io;
  if (lua_type(L, 1) == LUA_TSTRING) {
    if ((p->fd = open(lua_tostring(L, 1), O_RDONLY | O_CLOEXEC)) < 0)
      return lua_pushfstring(L, "wsup.lines: cannot open %s: %s", lua_tostring(L, 1), strerror(errno));
    p->own_fd = 1;
  } else if (lua_isinteger(L, 1)) {
    p->fd = (int)lua_tointeger(L, 1);
  } else {
    luaL_Stream *s = luaL_testudata(L, 1, LUA_FILEHANDLE);
    if (!s || !s->f) luaL_argerror(L, 1, "expected io.stdin or another file, a descriptor or a path");
    if (!s->closef) luaL_argerror(L, 1, "the file is closed");
    p->fd = fileno(s->f);
    fseek(s->f, 0, SEEK_CUR); /* gives back stdio's read-ahead: the descriptor is then where the script is */
  }
  if (!(io = p->io = calloc(1, sizeof *io))) return "wsup.lines: out of memory";
  io->p = p;
  if (fstat(p->fd, &sb) != 0) return lua_pushfstring(L, "wsup.lines: descriptor %d: %s", p->fd, strerror(errno));
  if (S_ISDIR(sb.st_mode)) return "wsup.lines: cannot read a directory";
  if (S_ISREG(sb.st_mode) || S_ISBLK(sb.st_mode)) {
    p->is_file = 1; /* regular files never block: read them through libuv's thread pool */
    if (!p->own_fd) p->offset = -1; /* a borrowed one from where it is, moving it on as we read */
  } else if (uv_guess_handle(p->fd) == UV_TTY) {
    if (uv_tty_init(uv, &io->u.tty, p->fd, 1) != 0) return "wsup.lines: cannot read the terminal";
    io->has_handle = 1;
  } else if (S_ISCHR(sb.st_mode)) {
    p->is_file = 1; /* /dev/null and other devices epoll cannot watch: read(2) in the thread pool */
    p->offset = -1;
  } else {
    /* libuv makes the descriptor non-blocking and closes it with the handle (unless it is 0-2):
     * a borrowed anonymous pipe (a popen'd file, a number) is read through its own open file
     * description (a dup would share the non-blocking flag), so the caller's stays open and
     * blocking; anything else through a dup, so at least it stays open. */
    if (!p->own_fd && p->fd > 2) {
      char path[64], target[16] = "";
      int fd = -1;
      snprintf(path, sizeof path, "/proc/self/fd/%d", p->fd);
      /* Only an anonymous pipe: opening a named FIFO again would wait for a writer. */
      if (readlink(path, target, sizeof target - 1) > 0 && strncmp(target, "pipe:", 5) == 0)
        fd = open(path, O_RDONLY | O_CLOEXEC);
      if (fd < 0 && (fd = fcntl(p->fd, F_DUPFD_CLOEXEC, 3)) < 0)
        return lua_pushfstring(L, "wsup.lines: descriptor %d: %s", p->fd, strerror(errno));
      p->fd = fd;
      p->own_fd = 1;
    }
    if (uv_pipe_init(uv, &io->u.pipe, 0) != 0) return "wsup.lines: out of memory";
    io->has_handle = 1;
    if (uv_pipe_open(&io->u.pipe, p->fd) != 0) return lua_pushfstring(L, "wsup.lines: cannot read descriptor %d", p->fd);
    if (p->fd > 2) p->own_fd = 0; /* the handle closes it now */
  }
  return NULL;
}

/* ---- watch and signal -------------------------------------------------------- */

static void fire_watch(void *ud) {
  lw_prod *p = ud;
  lua_State *L = lw_driver(p->c);
  if (!p->active) return;
  lua_pushstring(L, p->name);
  call(p, L, 1);
}

/* The directory is watched, not the file: editors save by writing a new file and
 * renaming it over the old one, which a watch on the old inode would miss. */
static void on_fs_event(uv_fs_event_t *h, const char *file, int events, int status) {
  pio *io = (pio *)h;
  lw_prod *p = io->p;
  (void)events;
  (void)status;
  if (!p || (p->base[0] && (!file || strcmp(file, p->base) != 0))) return;
  wl_timer_start(&p->c->loop, &p->debounce, p->debounce_ms, fire_watch, p);
}

static void deliver_signal(void *ud) {
  lw_prod *p = ud;
  lua_State *L = lw_driver(p->c);
  if (!hold(p, L)) return;
  while (p->active && p->pending_signals > 0) {
    p->pending_signals--;
    lua_pushstring(L, p->name);
    call(p, L, 1);
  }
  lua_pop(L, 1);
}

static void on_signal(uv_signal_t *h, int signum) {
  pio *io = (pio *)h;
  (void)signum;
  if (!io->p) return;
  io->p->pending_signals++;
  wl_defer(&io->p->c->loop, &io->p->job, deliver_signal, io->p);
}

int lw_signum(const char *name) {
  static const struct { const char *n; int s; } sigs[] = {
      {"int", SIGINT}, {"term", SIGTERM}, {"hup", SIGHUP}, {"usr1", SIGUSR1},
      {"usr2", SIGUSR2}, {"quit", SIGQUIT}, {"winch", SIGWINCH}, {NULL, 0}};
  if (strncasecmp(name, "sig", 3) == 0) name += 3;
  for (int i = 0; sigs[i].n; i++)
    if (strcasecmp(sigs[i].n, name) == 0) return sigs[i].s;
  return 0;
}

/* ---- the Lua side ------------------------------------------------------------ */

static lw_prod *newprod(lua_State *L, pkind kind, int fnidx) {
  lw_ctx *c = lua_touserdata(L, lua_upvalueindex(1));
  lw_prod *p;
  luaL_checktype(L, fnidx, LUA_TFUNCTION);
  p = lua_newuserdatauv(L, sizeof *p, 1);
  memset(p, 0, sizeof *p);
  p->self = LUA_NOREF;
  p->fd = -1;
  luaL_setmetatable(L, PROD_MT);
  lua_pushvalue(L, fnidx);
  lua_setiuservalue(L, -2, 1);
  p->c = c;
  p->kind = kind;
  return p;
}

static void activate(lua_State *L, lw_prod *p) {
  lua_pushvalue(L, -1);
  p->self = luaL_ref(L, LUA_REGISTRYINDEX);
  p->active = 1;
  p->c->producers++;
  p->next = p->c->prods;
  if (p->next) p->next->prev = p;
  p->c->prods = p;
}

static int l_lines(lua_State *L) {
  lw_prod *p;
  const char *err;
  int top;
  luaL_checkany(L, 1);
  p = newprod(L, P_LINES, 2);
  top = lua_gettop(L) - 1;
  p->max_line = MAX_LINE_DEFAULT;
  if (lua_istable(L, 3)) {
    lua_getfield(L, 3, "max_line");
    if (!lua_isnil(L, -1)) {
      if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1)
        return luaL_error(L, "wsup.lines: max_line must be a positive integer");
      p->max_line = (size_t)lua_tointeger(L, -1);
    }
    lua_pop(L, 1);
  }
  snprintf(p->name, sizeof p->name, "lines");
  if ((err = open_lines(L, p)) != NULL) {
    io_release(p);
    if (p->own_fd) close(p->fd);
    p->fd = -1;
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  lua_settop(L, top + 1);
  activate(L, p);
  read_more(p);
  return 1;
}

static int l_watch(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  lw_prod *p = newprod(L, P_WATCH, 2);
  char dir[PATH_MAX];
  const char *slash = strrchr(path, '/');
  struct stat sb;
  pio *io;
  int rc;
  p->debounce_ms = 50;
  if (lua_istable(L, 3)) {
    lua_getfield(L, 3, "debounce_ms");
    if (!lua_isnil(L, -1)) {
      lua_Number ms = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : -1;
      if (!(ms >= 0)) return luaL_error(L, "wsup.watch: debounce_ms must be a non-negative number of ms");
      p->debounce_ms = ms > (lua_Number)LW_MS_MAX ? LW_MS_MAX : (int64_t)ms;
    }
    lua_pop(L, 1);
  }
  if (strlen(path) >= sizeof p->name || strlen(slash ? slash + 1 : path) >= sizeof p->base) {
    lua_pushnil(L);
    lua_pushfstring(L, "wsup.watch: %s: %s", path, strerror(ENAMETOOLONG));
    return 2;
  }
  snprintf(p->name, sizeof p->name, "%s", path);
  if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
    snprintf(dir, sizeof dir, "%s", path);
  } else {
    snprintf(p->base, sizeof p->base, "%s", slash ? slash + 1 : path);
    snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - path) + (slash == path) : 1, slash ? path : ".");
  }
  if (!(io = calloc(1, sizeof *io))) return luaL_error(L, "wsup.watch: out of memory");
  io->p = p;
  p->io = io;
  uv_fs_event_init(&p->c->loop.uv, &io->u.ev);
  io->has_handle = 1;
  if ((rc = uv_fs_event_start(&io->u.ev, on_fs_event, dir, 0)) != 0) {
    io_release(p);
    lua_pushnil(L);
    lua_pushfstring(L, "wsup.watch: %s: %s", path, uv_strerror(rc));
    return 2;
  }
  activate(L, p);
  return 1;
}

static int l_signal(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  int signum = lw_signum(name), rc;
  lw_prod *p;
  pio *io;
  if (!signum) return luaL_argerror(L, 1, "unknown signal name");
  p = newprod(L, P_SIGNAL, 2);
  p->signum = signum;
  snprintf(p->name, sizeof p->name, "%s", name);
  if (!(io = calloc(1, sizeof *io))) return luaL_error(L, "wsup.signal: out of memory");
  io->p = p;
  p->io = io;
  uv_signal_init(&p->c->loop.uv, &io->u.sig);
  io->has_handle = 1;
  if ((rc = uv_signal_start(&io->u.sig, on_signal, signum)) != 0) {
    io_release(p);
    return luaL_error(L, "wsup.signal: %s", uv_strerror(rc));
  }
  activate(L, p);
  if (user_signal(p)) (*user_signal(p))++; /* the host leaves the first such signal to the script */
  return 1;
}

static int prod_stop(lua_State *L) {
  lw_prod *p = luaL_checkudata(L, 1, PROD_MT);
  stop(p);
  return 0;
}

static int prod_active(lua_State *L) {
  lw_prod *p = luaL_checkudata(L, 1, PROD_MT);
  lua_pushboolean(L, p->active);
  return 1;
}

static int prod_tostring(lua_State *L) {
  static const char *const kinds[] = {"lines", "watch", "signal"};
  lw_prod *p = luaL_checkudata(L, 1, PROD_MT);
  lua_pushfstring(L, "wsup.%s %s (%s)", kinds[p->kind], p->name, p->active ? "active" : "stopped");
  return 1;
}

static int prod_gc(lua_State *L) {
  lw_prod *p = luaL_checkudata(L, 1, PROD_MT);
  if (p->c && p->c->open) stop(p);
  free(p->buf);
  p->buf = NULL;
  return 0;
}

void lw_stop_producers(lw_ctx *c) {
  while (c->prods) stop(c->prods); /* stop unlinks it */
}

void lw_open_producers(lua_State *L) {
  static const luaL_Reg meth[] = {{"stop", prod_stop}, {"active", prod_active}, {"__close", prod_stop},
                                  {"__gc", prod_gc}, {"__tostring", prod_tostring}, {NULL, NULL}};
  static const luaL_Reg f[] = {{"lines", l_lines}, {"watch", l_watch}, {"signal", l_signal}, {NULL, NULL}};
  lw_open_class(L, PROD_MT, meth, f);
}
