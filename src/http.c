/* http.c — libcurl multi_socket on libuv, in the style of curl's docs/examples/multi-uv.c.
 * One uv_poll_t per socket, kept for the socket's whole life rather than per transfer: a cached
 * connection is reused by the next PUT, and re-creating its poll handle cost a malloc/free, an
 * ioctl and epoll_ctl calls per PUT. Sockets curl opens go through sock_open/sock_closed, so an fd's
 * hsock lives exactly as long as the fd; an idle (unwatched) one is unref'd and keeps nothing alive.
 * One uv_timer_t for curl's timeout (unref'd while idle). Finished transfers are pooled with their
 * easy handle and buffers; a reused handle keeps its fixed options and gets every per-request one
 * set again (never curl_easy_reset, which costs a full rebuild per PUT). */
#include "http.h"

#include <curl/curl.h>
#include <errno.h>
#include <locale.h>
#include <time.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dl.h"

#ifdef WSUP_CURL_SO
#define CURL_SO_NAME DL_STR(WSUP_CURL_SO) /* the SONAME compiled against (Makefile) */
#else
#define CURL_SO_NAME "libcurl.so.4"
#endif

#define POOL_MAX 4096               /* idle xfers (easy handle + buffers) kept for reuse: a fleet reuses, not re-creates */
#define POOL_BUF_MAX (64 * 1024)    /* larger buffers are freed, not pooled */
#define HDR_MAX (256 * 1024)        /* total response header bytes */
#define BODY_DEFAULT (1024 * 1024)

typedef struct buf { char *p; size_t len, cap; } buf;

/* libcurl's functions, loaded with the first client (dl.h): a process that never makes a
 * request does not map libcurl. Typed from curl.h, so a wrong signature cannot compile. */
#define CURL_FNS(X)                                                                                 \
  X(global_init) X(global_cleanup) X(easy_init) X(easy_cleanup) X(easy_setopt) X(easy_getinfo)      \
  X(easy_strerror) X(multi_init) X(multi_cleanup) X(multi_setopt) X(multi_add_handle)               \
  X(multi_remove_handle) X(multi_socket_action) X(multi_info_read) X(multi_strerror) X(slist_append) \
  X(slist_free_all)
/* Fields without the curl_ prefix: curl.h makes curl_easy_setopt and friends macros. */
#define CURL_FIELD(f) __typeof__(curl_##f) *f; /* NOLINT(bugprone-macro-parentheses): f names a field */
typedef struct curl_api { CURL_FNS(CURL_FIELD) } curl_api;
#define CURL_ENTRY(f) {"curl_" #f, offsetof(curl_api, f)},
static const dl_fn curl_fns[] = {CURL_FNS(CURL_ENTRY)};

/* One connection cache: a multi handle and its timer. libcurl 7.88 walks a host's connections in
 * the cache on every transfer (ConnectionExists to find an idle one; close_connect_only again on
 * curl_multi_remove_handle), so a single cache makes each PUT of a fleet cost O(connections):
 * 13 CPU-µs per PUT with 100 uploaders, 45 with 3000. A claimant (an uploader) gets a place in
 * a shard of at most SHARD_USERS, and its transfers find their connection among few. */
typedef struct http_shard {
  http_client *c;
  CURLM *multi;
  uv_timer_t timer;                 /* curl's timeout; data is the shard; unref'd while idle */
  size_t n_act;                     /* transfers running here */
  size_t users;                     /* claims held */
} http_shard;

#define SHARD_USERS 64

typedef struct hsock {
  uv_poll_t poll;                   /* first: a uv_poll_t* is a hsock*; poll.data is the client */
  http_shard *s;                    /* the cache whose connection owns the socket */
  curl_socket_t fd;
  int want;                         /* UV_* events curl asked for; 0: not watched (idle) */
  int polling;                      /* events the poll handle is started with; 0: stopped */
  int owned;                        /* opened by sock_open, so sock_closed tells us when it closes */
} hsock;

typedef struct fdslot { hsock *k; } fdslot;  /* a struct, not a bare hsock*, for clang-tidy 14's sizeof check */
typedef struct shardslot { http_shard *s; } shardslot; /* likewise */

struct http_xfer {
  http_client *c;
  http_shard *s;                    /* where it runs */
  http_xfer *prev, *next;           /* active list, or pool (next only) */
  CURL *easy;
  struct curl_slist *slist;         /* owned; kept with the pooled handle while the next request's headers match */
  int configured;                   /* the per-handle (fixed) options are set */
  const char *default_ca;           /* libcurl's built-in CA bundle path (its own static string), or NULL */
  const char *default_capath;       /* and CA directory, likewise */
  http_done_fn done;
  void *ud;
  size_t max_body, n_hdr, hv_cap;
  int truncate, truncated;          /* cut a body over max_body instead of failing (http_req.truncate_body) */
  int in_cb;
  const char *fail;                 /* our own reason for a write error */
  int sock_errno;                   /* errno of a socket() that failed for this transfer; else 0 */
  buf req, body, hdr;               /* hdr holds "name\0value\0" pairs */
  http_header *hv;
  char errbuf[CURL_ERROR_SIZE];
};

struct http_client {
  curl_api api;                     /* first: what every call into libcurl goes through */
  uv_loop_t *loop;
  shardslot *shards;                /* owned, each shard owned; shards never move (their timers are uv handles) */
  size_t n_shards;
  http_xfer *act, *pool;
  size_t n_act, n_pool;
  fdslot *fds;                      /* owned, indexed by fd: the hsock of every socket we watch or opened */
  size_t n_fds;
  int closing, pending;             /* pending: uv_close callbacks outstanding */
  http_closed_fn closed;
  void *closed_ud;
  /* Out of descriptors (socket() failed with EMFILE or ENFILE): on the next turn the caches
   * with no transfer running close their idle connections, which their claimants may never
   * use again, so that the others can connect. One cache prunes only while it runs transfers. */
  uv_timer_t relief;
};

static int buf_reserve(buf *b, size_t extra) {
  if (b->cap - b->len > extra) return 0;          /* always keep room for a NUL */
  size_t cap = b->cap ? b->cap : 256;
  while (cap - b->len <= extra) {
    if (cap > SIZE_MAX / 2) return -1;
    cap *= 2;
  }
  char *p = realloc(b->p, cap);
  if (!p) return -1;
  b->p = p;
  b->cap = cap;
  return 0;
}

static void buf_trim(buf *b) {
  b->len = 0;
  if (b->cap > POOL_BUF_MAX) { free(b->p); b->p = NULL; b->cap = 0; }
}

static void xfer_free(http_client *c, http_xfer *x) {
  if (x->easy) c->api.easy_cleanup(x->easy);
  c->api.slist_free_all(x->slist);
  free(x->req.p); free(x->body.p); free(x->hdr.p); free(x->hv);
  free(x);
}

static void finalize(http_client *c) {
  http_closed_fn closed = c->closed;
  void *ud = c->closed_ud;
  __typeof__(curl_global_cleanup) *global_cleanup = c->api.global_cleanup;
  for (size_t i = 0; i < c->n_shards; i++) free(c->shards[i].s);
  free(c->shards);
  free(c);
  global_cleanup();
  if (closed) closed(ud);
}

static void on_relief_closed(uv_handle_t *h) {
  http_client *c = h->data;
  if (--c->pending == 0 && c->closing) finalize(c);
}

static void on_handle_closed(uv_handle_t *h) {
  http_client *c = h->type == UV_POLL ? h->data : ((http_shard *)h->data)->c;
  if (h->type == UV_POLL) free(h);
  if (--c->pending == 0 && c->closing) finalize(c);
}

static hsock *sock_get(const http_client *c, curl_socket_t fd) {
  return fd >= 0 && (size_t)fd < c->n_fds ? c->fds[fd].k : NULL;
}

/* Forgets k and closes its handle (which stops it at once: uv_close deregisters the fd now). */
static void sock_drop(http_client *c, hsock *k) {
  c->fds[k->fd].k = NULL;
  c->pending++;
  uv_close((uv_handle_t *)&k->poll, on_handle_closed);
}

static void on_poll(uv_poll_t *p, int status, int events);

static hsock *sock_new(http_client *c, http_shard *s, curl_socket_t fd, int owned) {
  if (fd < 0) return NULL;
  if ((size_t)fd >= c->n_fds) {
    size_t n = c->n_fds ? c->n_fds : 64;
    while (n <= (size_t)fd) n *= 2;
    fdslot *t = realloc(c->fds, n * sizeof *t);
    if (!t) return NULL;
    memset(t + c->n_fds, 0, (n - c->n_fds) * sizeof *t);
    c->fds = t;
    c->n_fds = n;
  }
  hsock *k = malloc(sizeof *k);
  if (!k) return NULL;
  if (uv_poll_init_socket(c->loop, &k->poll, fd) != 0) { free(k); return NULL; }
  k->poll.data = c;
  k->s = s;
  k->fd = fd;
  k->want = k->polling = 0;
  k->owned = owned;
  uv_unref((uv_handle_t *)&k->poll);   /* ref'd only while curl watches it */
  c->fds[fd].k = k;
  return k;
}

/* Makes k watch ev for curl (0: curl no longer watches it). Restarting a uv_poll_t costs an epoll_ctl
 * DEL and ADD, so an unchanged mask is left alone, and an idle socket stays registered for reading,
 * unref'd: curl usually wants just that on its next transfer, and on_poll stops it should the peer
 * send or close meanwhile. Writable is stopped, as it would fire at once. */
static int sock_watch(hsock *k, int ev) {
  k->want = ev;
  if (!ev) {
    uv_unref((uv_handle_t *)&k->poll);
    if (k->polling & UV_WRITABLE) { uv_poll_stop(&k->poll); k->polling = 0; }
    return 0;
  }
  uv_ref((uv_handle_t *)&k->poll);
  if (k->polling == ev) return 0;
  k->polling = 0;
  if (uv_poll_start(&k->poll, ev, on_poll) != 0) return -1;
  k->polling = ev;
  return 0;
}

static void unlink_act(http_client *c, http_xfer *x) {
  if (x->prev) x->prev->next = x->next; else c->act = x->next;
  if (x->next) x->next->prev = x->prev;
  c->n_act--;
  if (--x->s->n_act == 0) uv_unref((uv_handle_t *)&x->s->timer);
}

static void recycle(http_client *c, http_xfer *x) {
  if (c->closing || c->n_pool >= POOL_MAX) { xfer_free(c, x); return; }
  buf_trim(&x->req); buf_trim(&x->body); buf_trim(&x->hdr);
  x->next = c->pool;
  c->pool = x;
  c->n_pool++;
}

static void finish(http_client *c, http_xfer *x, CURLcode rc) {
  c->api.multi_remove_handle(x->s->multi, x->easy);
  unlink_act(c, x);
  http_res r = { .err = (int)rc, .errmsg = "" };
  if (rc == CURLE_OK) {
    c->api.easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &r.status);
  } else if (rc == CURLE_COULDNT_CONNECT && x->sock_errno) { /* not the server refusing: we could not open a socket */
    snprintf(x->errbuf, sizeof x->errbuf, "cannot open a socket: %s", strerror(x->sock_errno));
    r.errmsg = x->errbuf;
    r.err = CURLE_FAILED_INIT; /* a local failure ("transport"), not "refused" */
  } else {
    r.errmsg = x->fail ? x->fail : x->errbuf[0] ? x->errbuf : c->api.easy_strerror(rc);
  }
  curl_off_t up = 0;
  c->api.easy_getinfo(x->easy, CURLINFO_SIZE_UPLOAD_T, &up);
  r.bytes_sent = up > 0 ? (size_t)up : 0;
  if (x->n_hdr > x->hv_cap) {
    http_header *hv = realloc(x->hv, x->n_hdr * sizeof *hv);
    if (hv) { x->hv = hv; x->hv_cap = x->n_hdr; }
  }
  char *p = x->hdr.p;
  for (; r.n_headers < x->n_hdr && r.n_headers < x->hv_cap; r.n_headers++) { /* short only on OOM */
    x->hv[r.n_headers].name = p;
    p += strlen(p) + 1;
    x->hv[r.n_headers].value = p;
    p += strlen(p) + 1;
  }
  r.headers = x->hv;
  r.body = x->body.len ? x->body.p : (char *)""; /* NUL-terminated by on_body; a pooled empty one holds stale bytes */
  r.body_len = x->body.len;
  r.truncated = x->truncated;
  x->in_cb = 1;
  x->done(x->ud, &r);
  recycle(c, x);
}

/* Called after every socket_action: collect finished transfers one message at a time, so a done
 * callback cancelling another finished xfer (its message is dropped by remove_handle) or closing
 * the client is safe. */
static void check_done(http_shard *s) {
  http_client *c = s->c;
  CURLMsg *m;
  int left;
  while (!c->closing && (m = c->api.multi_info_read(s->multi, &left))) {
    if (m->msg != CURLMSG_DONE) continue;
    char *priv = NULL;
    CURLcode rc = m->data.result;
    c->api.easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
    finish(c, (http_xfer *)priv, rc);
  }
}

static void on_poll(uv_poll_t *p, int status, int events) {
  hsock *k = (hsock *)p;
  http_client *c = p->data;
  if (!k->want) { uv_poll_stop(p); k->polling = 0; return; } /* idle: curl checks the connection before reuse */
  /* On an error (POLLERR: libuv has stopped the handle) curl is told nothing (0) and checks the
   * socket itself: a server that refuses a large body answers (413) and resets, and that answer
   * is still there to read; CURL_CSELECT_ERR would fail the transfer without reading it. */
  int f = status < 0 ? 0 : (events & UV_READABLE ? CURL_CSELECT_IN : 0) | (events & UV_WRITABLE ? CURL_CSELECT_OUT : 0);
  http_shard *s = k->s;
  curl_socket_t fd = k->fd;
  int running;
  if (status < 0) k->polling = 0;
  s->c->api.multi_socket_action(s->multi, fd, f, &running);
  /* curl reports only changes of what it watches: if it still wants this socket, watch it again. */
  if (status < 0 && (k = sock_get(c, fd)) != NULL && k->want && !k->polling) sock_watch(k, k->want);
  check_done(s);
}

static void on_timer(uv_timer_t *t) {
  http_shard *s = t->data;
  int running;
  s->c->api.multi_socket_action(s->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  check_done(s);
}

/* The hsock is found by fd number, never through curl_multi_assign: curl's per-socket entry (and
 * its pointer) ends at every CURL_POLL_REMOVE, and on a close curl reports REMOVE only after
 * sock_closed has freed the hsock. */
static int curl_sock_cb(CURL *e, curl_socket_t fd, int what, void *ud, void *sockp) {
  (void)e; (void)sockp;
  http_shard *s = ud;
  http_client *c = s->c;
  hsock *k = sock_get(c, fd);
  if (k && k->s != s) {             /* the number now belongs to another cache's socket: this one's is closed */
    if (what == CURL_POLL_REMOVE) return 0;
    sock_drop(c, k);
    k = NULL;
  }
  if (what == CURL_POLL_REMOVE) {
    if (k && k->owned) sock_watch(k, 0);
    else if (k) sock_drop(c, k);    /* not opened by us (the resolver's wakeup socket): its close is never reported */
    return 0;
  }
  if (!k && !(k = sock_new(c, s, fd, 0))) return -1;
  return sock_watch(k, (what & CURL_POLL_IN ? UV_READABLE : 0) | (what & CURL_POLL_OUT ? UV_WRITABLE : 0));
}

/* CURLOPT_OPENSOCKETFUNCTION: curl's own socket() call, plus the hsock that lives as long as the fd. */
static void on_relief(uv_timer_t *t);

static curl_socket_t sock_open(void *ud, curlsocktype purpose, struct curl_sockaddr *a) {
  (void)purpose;
  http_xfer *x = ud;
  http_shard *s = x->s;
  http_client *c = s->c;
  curl_socket_t fd = socket(a->family, a->socktype, a->protocol);
  if (fd == CURL_SOCKET_BAD) {
    x->sock_errno = errno;
    if ((errno == EMFILE || errno == ENFILE) && !uv_is_active((uv_handle_t *)&c->relief))
      uv_timer_start(&c->relief, on_relief, 0, 0);
    return fd;
  }
  /* The number was free, so an hsock still holding it is stale: a resolver socket curl closed
   * before its REMOVE. curl still counts that watch for this number and reports only changes, so
   * the new socket takes it over. */
  hsock *old = sock_get(c, fd), *k;
  int want = old && old->s == s ? old->want : 0;
  if (old) sock_drop(c, old);
  if (!(k = sock_new(c, s, fd, 1)) || sock_watch(k, want) != 0) {
    if (k) sock_drop(c, k);
    close(fd);
    return CURL_SOCKET_BAD;
  }
  return fd;
}

/* CURLOPT_CLOSESOCKETFUNCTION: the handle goes before the fd, whose number may be reused at once. */
static int sock_closed(void *ud, curl_socket_t fd) {
  http_client *c = ud;
  hsock *k = sock_get(c, fd);
  if (k) sock_drop(c, k);
  return close(fd) == 0 ? 0 : 1;
}

static int curl_timer_cb(CURLM *m, long ms, void *ud) {
  (void)m;
  http_shard *s = ud;
  if (ms < 0) uv_timer_stop(&s->timer);
  else uv_timer_start(&s->timer, on_timer, (uint64_t)ms, 0); /* 0: curl wants action now, on this turn */
  return 0;
}

static size_t on_body(char *p, size_t sz, size_t n, void *ud) {
  http_xfer *x = ud;
  size_t len = sz * n;
  size_t keep = len;
  if (len > x->max_body - x->body.len) {
    if (!x->truncate) { x->fail = "response body over limit"; return 0; }
    keep = x->max_body - x->body.len; /* the rest is read and dropped: the status still counts */
    x->truncated = 1;
  }
  if (buf_reserve(&x->body, keep)) { x->fail = "out of memory"; return 0; }
  memcpy(x->body.p + x->body.len, p, keep);
  x->body.len += keep;
  x->body.p[x->body.len] = '\0';
  return len;
}

static int is_ws(char ch) { return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n'; }

static size_t on_header(char *p, size_t sz, size_t n, void *ud) {
  http_xfer *x = ud;
  size_t len = sz * n;
  if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) { x->hdr.len = 0; x->n_hdr = 0; return len; }
  const char *colon = memchr(p, ':', len);
  if (!colon || colon == p) return len;              /* blank line, folding, junk: ignored */
  size_t nl = (size_t)(colon - p);
  const char *v = colon + 1, *end = p + len;
  while (v < end && is_ws(*v)) v++;
  while (end > v && is_ws(end[-1])) end--;
  size_t vl = (size_t)(end - v);
  if (x->hdr.len + nl + vl + 2 > HDR_MAX) { x->fail = "response headers over limit"; return 0; }
  if (buf_reserve(&x->hdr, nl + vl + 2)) { x->fail = "out of memory"; return 0; }
  char *d = x->hdr.p + x->hdr.len;
  for (size_t i = 0; i < nl; i++) d[i] = (p[i] >= 'A' && p[i] <= 'Z') ? (char)(p[i] + 32) : p[i];
  d[nl] = '\0';
  memcpy(d + nl + 1, v, vl);
  d[nl + 1 + vl] = '\0';
  x->hdr.len += nl + vl + 2;
  x->n_hdr++;
  return len;
}

static int is_tchar(unsigned char ch) {
  return ch > 32 && ch < 127 && !strchr("\"(),/:;<=>?@[\\]{}", ch);
}

int http_is_token(const char *s, size_t n) {
  if (!n) return 0;
  for (size_t i = 0; i < n; i++)
    if (!is_tchar((unsigned char)s[i])) return 0;
  return 1;
}

int http_is_field_value(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (((unsigned char)s[i] < 32 && s[i] != '\t') || s[i] == 127) return 0;
  return 1;
}

int http_url_chars_ok(const char *url) {
  for (const unsigned char *s = (const unsigned char *)url; *s; s++)
    if (*s <= 32 || *s == 127) return 0;
  return 1;
}

int http_header_is(const char *line, const char *name) {
  size_t n = strlen(name);
  return strncasecmp(line, name, n) == 0 && (line[n] == ':' || line[n] == ';');
}

/* NULL if acceptable, else the reason. */
static const char *validate(const http_req *r) {
  if (!r->url || !*r->url) return "missing url";
  if (!http_url_chars_ok(r->url)) return "url contains whitespace or control characters";
  if (r->method) {
    if (!*r->method) return "empty method";
    for (const unsigned char *s = (const unsigned char *)r->method; *s; s++)
      if (!is_tchar(*s)) return "invalid character in method";
  }
  if (r->n_headers && !r->headers) return "headers missing";
  for (size_t i = 0; i < r->n_headers; i++) {
    const char *h = r->headers[i];
    if (!h) return "NULL header";
    size_t name = strcspn(h, ":;");
    if (!h[name] || !http_is_token(h, name)) return "header must be \"Name: value\"";
    if (!http_is_field_value(h + name, strlen(h + name))) return "header contains CR, LF or control character";
  }
  return NULL;
}

static void set_err(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || !errlen) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* The request's header lines: the caller's, then the extras. */
static const char *hdr_line(const http_req *r, const char *const *extra, size_t i) {
  return i < r->n_headers ? r->headers[i] : extra[i - r->n_headers];
}

/* Makes x->slist the list of r's lines plus extra (NULL-terminated), keeping the pooled list
 * when it already matches (a fleet sends the same headers every time). 0, or -1 on OOM
 * (x->slist is then NULL). */
static int set_headers(http_xfer *x, const http_req *r, const char *const *extra) {
  http_client *c = x->c;
  size_t n = r->n_headers;
  while (extra[n - r->n_headers]) n++;
  const struct curl_slist *l = x->slist;
  size_t i = 0;
  for (; i < n && l && !strcmp(l->data, hdr_line(r, extra, i)); i++) l = l->next;
  if (i == n && !l) return 0;
  c->api.slist_free_all(x->slist);
  x->slist = NULL;
  int oom = 0;
  for (i = 0; i < n && !oom; i++) {
    struct curl_slist *nl = c->api.slist_append(x->slist, hdr_line(r, extra, i));
    if (nl) x->slist = nl; else oom = 1;
  }
  if (oom) { c->api.slist_free_all(x->slist); x->slist = NULL; }
  c->api.easy_setopt(x->easy, CURLOPT_HTTPHEADER, x->slist); /* never left pointing at a freed list */
  return oom ? -1 : 0;
}

/* Options that are the same for every request of this client: set once per easy handle. */
static void set_fixed(http_client *c, http_xfer *x) {
  CURL *e = x->easy;
  c->api.easy_setopt(e, CURLOPT_PRIVATE, x);
  c->api.easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  c->api.easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
  c->api.easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
  c->api.easy_setopt(e, CURLOPT_WRITEDATA, x);
  c->api.easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
  c->api.easy_setopt(e, CURLOPT_HEADERDATA, x);
  c->api.easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
  c->api.easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  c->api.easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  /* The connection keeps these and may outlive the easy handle, in the multi's cache: data is the
   * client. OPENSOCKETDATA, the transfer (and through it the shard), is set per request. */
  c->api.easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, sock_open);
  c->api.easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, sock_closed);
  c->api.easy_setopt(e, CURLOPT_CLOSESOCKETDATA, c);
  /* CURLOPT_CAINFO NULL means "no CA file", not "the default": kept to restore it after a ca_file. */
  if (c->api.easy_getinfo(e, CURLINFO_CAINFO, &x->default_ca) != CURLE_OK) x->default_ca = NULL;
  if (c->api.easy_getinfo(e, CURLINFO_CAPATH, &x->default_capath) != CURLE_OK) x->default_capath = NULL;
  x->configured = 1;
}

http_xfer *http_start(http_client *c, const http_req *r, http_done_fn done, void *ud, char *err, size_t errlen) {
  const char *why = !c || !r || !done ? "invalid argument" : c->closing ? "client is closing"
                  : r->shard < 0 || (size_t)r->shard >= c->n_shards ? "no such shard" : validate(r);
  if (why) { set_err(err, errlen, "%s", why); return NULL; }
  http_xfer *x = c->pool;
  if (x) {
    c->pool = x->next;
    c->n_pool--;
  } else {
    if (!(x = calloc(1, sizeof *x)) || !(x->easy = c->api.easy_init())) {
      free(x);
      set_err(err, errlen, "out of memory");
      return NULL;
    }
  }
  x->c = c; x->s = c->shards[r->shard].s; x->done = done; x->ud = ud; x->in_cb = 0; x->fail = NULL;
  x->sock_errno = 0;
  x->n_hdr = 0; x->errbuf[0] = '\0';
  x->max_body = r->max_body ? r->max_body : BODY_DEFAULT;
  x->truncate = r->truncate_body != 0;
  x->truncated = 0;
  if (!x->configured) set_fixed(c, x);

  /* Every per-request option is set on every request, to its value or its default, so nothing
   * of a previous request on this pooled handle survives (an option added here must be too). */
  CURL *e = x->easy;
  const char *method = r->method ? r->method : "GET", *body = r->body;
  if (!body && (!strcmp(method, "POST") || !strcmp(method, "PUT") || !strcmp(method, "PATCH"))) body = "";
  int ctype = 0, oom = 0;
  for (size_t i = 0; i < r->n_headers; i++)
    ctype |= http_header_is(r->headers[i], "Content-Type");
  const char *extra[3] = { NULL, NULL, NULL };
  if (body) { extra[0] = "Expect:"; extra[1] = ctype ? NULL : "Content-Type:"; }
  oom = set_headers(x, r, extra) != 0;
  c->api.easy_setopt(e, CURLOPT_NOBODY, 0L);          /* before POSTFIELDS: a HEAD's no-body flag outlives POSTFIELDS */
  if (body && !oom) {
    if (buf_reserve(&x->req, r->body_len) == 0) {
      memcpy(x->req.p, body, r->body_len);
      x->req.len = r->body_len;
      c->api.easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
      c->api.easy_setopt(e, CURLOPT_POSTFIELDS, x->req.p);
    } else {
      oom = 1;
    }
  }
  if (!body || oom) {                               /* no body: plain GET unless a method is set below */
    c->api.easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)-1);
    c->api.easy_setopt(e, CURLOPT_POSTFIELDS, (char *)NULL);
    c->api.easy_setopt(e, CURLOPT_HTTPGET, 1L);
  }
  if (oom) { set_err(err, errlen, "out of memory"); recycle(c, x); return NULL; }

  c->api.easy_setopt(e, CURLOPT_OPENSOCKETDATA, x);
  c->api.easy_setopt(e, CURLOPT_URL, r->url);
  c->api.easy_setopt(e, CURLOPT_PIPEWAIT, strncasecmp(r->url, "https:", 6) == 0 ? 1L : 0L); /* prefer h2 multiplexing */
  if (strcmp(method, "GET") == 0) {
    c->api.easy_setopt(e, CURLOPT_CUSTOMREQUEST, body ? method : (const char *)NULL);
  } else if (strcmp(method, "HEAD") == 0) {
    c->api.easy_setopt(e, CURLOPT_CUSTOMREQUEST, (char *)NULL);
    c->api.easy_setopt(e, CURLOPT_NOBODY, 1L);
  } else {
    c->api.easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
  }
  c->api.easy_setopt(e, CURLOPT_TIMEOUT_MS, r->timeout_ms > 0 ? r->timeout_ms : 0L);
  c->api.easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, r->connect_timeout_ms > 0 ? r->connect_timeout_ms : 0L);
  c->api.easy_setopt(e, CURLOPT_FOLLOWLOCATION, r->max_redirects > 0 ? 1L : 0L);
  c->api.easy_setopt(e, CURLOPT_MAXREDIRS, r->max_redirects > 0 ? r->max_redirects : -1L);
  c->api.easy_setopt(e, CURLOPT_SSL_VERIFYPEER, r->insecure ? 0L : 1L);
  c->api.easy_setopt(e, CURLOPT_SSL_VERIFYHOST, r->insecure ? 0L : 2L);
  /* ca_file replaces the system's CAs: OpenSSL would also trust the CA directory. */
  c->api.easy_setopt(e, CURLOPT_CAINFO, r->ca_file ? r->ca_file : x->default_ca);
  c->api.easy_setopt(e, CURLOPT_CAPATH, r->ca_file ? (const char *)NULL : x->default_capath);

  CURLMcode mc = c->api.multi_add_handle(x->s->multi, e);
  if (mc != CURLM_OK) {
    set_err(err, errlen, "%s", c->api.multi_strerror(mc));
    recycle(c, x);
    return NULL;
  }
  x->prev = NULL;
  x->next = c->act;
  if (c->act) c->act->prev = x;
  c->act = x;
  c->n_act++;
  if (x->s->n_act++ == 0) uv_ref((uv_handle_t *)&x->s->timer);
  return x;
}

void http_cancel(http_xfer *x) {
  if (!x || x->in_cb) return;
  http_client *c = x->c;
  c->api.multi_remove_handle(x->s->multi, x->easy);
  unlink_act(c, x);
  recycle(c, x);
}

/* A multi handle for shard s, configured; NULL on OOM. */
static CURLM *shard_multi(http_client *c, http_shard *s) {
  CURLM *m = c->api.multi_init();
  if (!m) return NULL;
  c->api.multi_setopt(m, CURLMOPT_SOCKETFUNCTION, curl_sock_cb);
  c->api.multi_setopt(m, CURLMOPT_SOCKETDATA, s);
  c->api.multi_setopt(m, CURLMOPT_TIMERFUNCTION, curl_timer_cb);
  c->api.multi_setopt(m, CURLMOPT_TIMERDATA, s);
  c->api.multi_setopt(m, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
  c->api.multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, 0L);  /* unlimited */
  c->api.multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, 0L); /* unlimited */
  c->api.multi_setopt(m, CURLMOPT_MAXCONNECTS, 10000L);       /* idle connection cache */
  return m;
}

/* A new shard at the end of c->shards; -1 on OOM. */
static int shard_add(http_client *c) {
  shardslot *t = realloc(c->shards, (c->n_shards + 1) * sizeof *t);
  if (!t) return -1;
  c->shards = t;
  http_shard *s = calloc(1, sizeof *s);
  if (!s) return -1;
  if (!(s->multi = shard_multi(c, s))) { free(s); return -1; }
  if (uv_timer_init(c->loop, &s->timer) != 0) { c->api.multi_cleanup(s->multi); free(s); return -1; }
  s->c = c;
  s->timer.data = s;
  uv_unref((uv_handle_t *)&s->timer);
  c->shards[c->n_shards].s = s;
  return (int)c->n_shards++;
}

/* See http_client.relief. A new multi replaces each idle one, whose cleanup closes its
 * cached connections through sock_closed; claimants keep their shard. */
static void on_relief(uv_timer_t *t) {
  http_client *c = t->data;
  for (size_t i = 0; i < c->n_shards && !c->closing; i++) {
    http_shard *s = c->shards[i].s;
    CURLM *m;
    if (s->n_act || !(m = shard_multi(c, s))) continue;
    c->api.multi_cleanup(s->multi);
    s->multi = m;
  }
}

http_client *http_client_new(uv_loop_t *loop, char *err, size_t errlen) {
  http_client *c = loop ? calloc(1, sizeof *c) : NULL;
  if (!c) {
    set_err(err, errlen, "%s", loop ? "out of memory" : "invalid argument");
    return NULL;
  }
  if (dl_load(CURL_SO_NAME, &c->api, curl_fns, sizeof curl_fns / sizeof *curl_fns, err, errlen) != 0) {
    free(c);
    return NULL;
  }
  if (c->api.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    set_err(err, errlen, "curl_global_init failed");
    free(c);
    return NULL;
  }
  c->loop = loop;
  if (shard_add(c) != 0) {             /* shard 0: one-off requests, and the first claims */
    c->api.global_cleanup();
    free(c->shards);
    free(c);
    set_err(err, errlen, "out of memory");
    return NULL;
  }
  uv_timer_init(loop, &c->relief);     /* cannot fail for a timer */
  c->relief.data = c;
  return c;
}

int http_claim(http_client *c) {
  if (!c || c->closing) return -1;
  size_t i = 0;
  while (i < c->n_shards && c->shards[i].s->users >= SHARD_USERS) i++;
  if (i == c->n_shards && shard_add(c) < 0) return -1;
  c->shards[i].s->users++;
  return (int)i;
}

void http_release(http_client *c, int shard) {
  if (c && !c->closing && shard >= 0 && (size_t)shard < c->n_shards && c->shards[shard].s->users)
    c->shards[shard].s->users--;
}

void http_client_close(http_client *c, http_closed_fn closed, void *ud) {
  if (!c || c->closing) return;
  c->closing = 1;
  c->closed = closed;
  c->closed_ud = ud;
  for (http_xfer *x = c->act, *next; x; x = next) { /* the timers are closed below: no unref needed */
    next = x->next;
    c->api.multi_remove_handle(x->s->multi, x->easy);
    xfer_free(c, x);
  }
  c->act = NULL;
  c->n_act = 0;
  while (c->pool) {
    http_xfer *x = c->pool;
    c->pool = x->next;
    xfer_free(c, x);
  }
  for (size_t i = 0; i < c->n_shards; i++) {
    c->api.multi_cleanup(c->shards[i].s->multi);   /* closes cached connections, through sock_closed */
    c->shards[i].s->multi = NULL;
  }
  for (size_t i = 0; i < c->n_fds; i++)
    if (c->fds[i].k) sock_drop(c, c->fds[i].k);
  free(c->fds);
  c->fds = NULL;
  c->n_fds = 0;
  for (size_t i = 0; i < c->n_shards; i++) {
    c->pending++;
    uv_close((uv_handle_t *)&c->shards[i].s->timer, on_handle_closed);
  }
  c->pending++;
  uv_close((uv_handle_t *)&c->relief, on_relief_closed);
}

/* An HTTP-date (RFC 9110 5.6.7: the IMF-fixdate, and the obsolete RFC 850 and asctime
 * forms a recipient must accept), in seconds since the epoch; -1 when v is none. */
static time_t http_date(const char *v) {
  static const char *const forms[] = {"%a, %d %b %Y %H:%M:%S GMT", "%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"};
  locale_t c = newlocale(LC_ALL_MASK, "C", (locale_t)0); /* day and month names are English whatever the process's locale */
  time_t t = (time_t)-1;
  for (size_t i = 0; c && t == (time_t)-1 && i < sizeof forms / sizeof *forms; i++) {
    struct tm tm = {0};
    const char *end = strptime_l(v, forms[i], &tm, c);
    if (end && *end == '\0') t = timegm(&tm);
  }
  if (c) freelocale(c);
  return t;
}

int64_t http_retry_after_ms(const char *v, time_t now) {
  if (!v) return -1;
  while (*v == ' ' || *v == '\t') v++;
  if (*v >= '0' && *v <= '9') {
    int64_t s = 0;
    for (; *v >= '0' && *v <= '9'; v++) /* saturates at what s * 1000 can hold */
      s = s > (INT64_MAX / 1000 - (*v - '0')) / 10 ? INT64_MAX / 1000 : s * 10 + (*v - '0');
    while (*v == ' ' || *v == '\t') v++;
    return *v ? -1 : s * 1000;
  }
  time_t t = http_date(v);
  if (t == (time_t)-1) return -1;
  return t <= now ? 0 : ((int64_t)t - (int64_t)now) * 1000;
}

size_t http_active(const http_client *c) { return c ? c->n_act : 0; }
