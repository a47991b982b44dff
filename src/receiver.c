/* receiver.c: see receiver.h.
 *
 * libmicrohttpd runs its own polling thread and calls on_access; what the caller's
 * threads also touch sits behind rcv.mu. Stored states are immutable snapshots (a
 * PUT folds into a fresh copy and swaps it in), so a response or the log hook can
 * hold one without the lock. A delayed response parks its connection with
 * MHD_suspend_connection; a timer thread resumes it when due. A chaos drop answers
 * MHD_NO from on_access once the body is read (after any delay): libmicrohttpd then
 * closes the connection without writing a byte and still calls on_completed.
 */
#include "receiver.h"

#include <arpa/inet.h>
#include <limits.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dl.h"

#ifdef WSUP_MHD_SO
#define MHD_SO_NAME DL_STR(WSUP_MHD_SO) /* the SONAME compiled against (Makefile) */
#else
#define MHD_SO_NAME "libmicrohttpd.so.12"
#endif

/* libmicrohttpd's functions, loaded when a receiver starts (dl.h). Typed from microhttpd.h. */
#define MHD_FNS(X)                                                                                  \
  X(MHD_start_daemon) X(MHD_stop_daemon) X(MHD_get_daemon_info) X(MHD_create_response_from_buffer) \
  X(MHD_add_response_header) X(MHD_destroy_response) X(MHD_queue_response)                         \
  X(MHD_lookup_connection_value) X(MHD_suspend_connection) X(MHD_resume_connection)
#define MHD_FIELD(f) __typeof__(f) *f; /* NOLINT(bugprone-macro-parentheses): f names a field */
typedef struct mhd_api { MHD_FNS(MHD_FIELD) } mhd_api;
#define MHD_ENTRY(f) {#f, offsetof(mhd_api, f)},
static const dl_fn mhd_fns[] = {MHD_FNS(MHD_ENTRY)};

#define RCV_MAX_BODY (1024 * 1024)
#define RCV_STATUSES 1000 /* MHD only sends status codes 100..999 */
#define RCV_FINAL_MIN 200 /* injected faults are final answers: a 1xx would leave the client waiting */
#define RCV_CONN_LIMIT 4096u
#define RCV_TIMEOUT_S 300u

static const char *const default_keys[] = {"external_metadata", "internal_metadata"};

/* One request in flight; lives in MHD's per-request slot, freed by on_completed. */
struct req {
  struct req *next;            /* link in rcv.parked while suspended */
  struct MHD_Connection *conn; /* set while parked */
  long long due_ms;            /* CLOCK_MONOTONIC deadline while parked */
  char *buf;                   /* owned body bytes, never more than max_body */
  size_t len;
  bool want_body, too_big, waited;
  bool decided, drop;          /* drop: close without a response */
  int status;                  /* the outcome's status once decided */
  int delay_ms;                /* chaos delay of this request */
  struct MHD_Response *resp;   /* owned until queued */
};

/* rcv_chaos's settings and its PRNG state. */
struct chaos {
  bool on;
  double fail, drop, drop_applied, retry_p;
  int statuses[RCV_CHAOS_STATUSES];
  size_t nstatuses;
  char retry[64];
  int delay_lo, delay_hi;
  uint64_t rng;
};

/* What a chaos roll makes of a PUT. */
enum chaos_act { CHAOS_NONE, CHAOS_FAIL, CHAOS_DROP, CHAOS_DROP_APPLIED };

struct rcv {
  mhd_api api;                 /* set before any thread starts, read-only after */
  struct MHD_Daemon *d;
  pthread_t timer;
  pthread_mutex_t mu;          /* guards the fields up to log_ud */
  pthread_cond_t cv;           /* wakes the timer thread */
  bool stopping;
  json_t *states;              /* owned: path -> immutable state snapshot */
  struct req *parked;          /* suspended connections awaiting their delay */
  int delay_ms, fail_n, fail_status;
  char fail_retry[64];         /* "" = no Retry-After header */
  struct chaos chaos;
  unsigned long requests, by_status[RCV_STATUSES], dropped, dropped_applied;
  rcv_log_fn log_fn;
  void *log_ud;
  size_t max_body, nkeys;      /* these are fixed once rcv_start returns */
  char **keys;                 /* owned copies of the merge keys */
  int port;
  char err[256];               /* first libmicrohttpd message, read if start fails */
};

/* What a request gets answered; body is owned (a state snapshot or an error). */
struct reply {
  int status;
  json_t *body;
  char retry[64];
};

/* ---- folding ---- */

static bool is_merge_key(const char *k, const char *const *keys, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(k, keys[i]) == 0) return true;
  return false;
}

/* One level only: obj's members overwrite state[key]'s, and null ones delete. */
static int merge_one(json_t *state, const char *key, json_t *obj) {
  json_t *dst = json_object_get(state, key), *v;
  const char *k;
  if (!json_is_object(dst)) {
    dst = json_object();
    if (json_object_set_new(state, key, dst) != 0) return -1;
  }
  json_object_foreach(obj, k, v) {
    if (json_is_null(v)) json_object_del(dst, k);
    else if (json_object_set_new(dst, k, json_deep_copy(v)) != 0) return -1;
  }
  return 0;
}

int rcv_fold(json_t *state, const json_t *patch, const char *const *keys, size_t n) {
  json_t *p = (json_t *)patch, *v; /* jansson's iterators take non-const */
  const char *k;
  if (!json_is_object(state) || !json_is_object(p)) return -1;
  json_object_foreach(p, k, v) {
    if (json_is_object(v) && is_merge_key(k, keys, n)) {
      if (merge_one(state, k, v) != 0) return -1;
    } else if (json_object_set_new(state, k, json_deep_copy(v)) != 0) {
      return -1;
    }
  }
  return 0;
}

/* ---- deciding a request ---- */

static bool path_ok(const char *url) {
  return strcmp(url, "/worker") == 0 || strncmp(url, "/worker/", 8) == 0;
}

static int fail_with(struct reply *out, int status, const char *msg) {
  out->status = status;
  out->body = json_pack("{s:s}", "error", msg);
  if (!out->body) /* msg may quote bytes that are not UTF-8 */
    out->body = json_pack("{s:s}", "error", "invalid request");
  return status;
}

static int get_state(rcv *r, const char *path, struct reply *out) {
  pthread_mutex_lock(&r->mu);
  out->body = json_incref(json_object_get(r->states, path));
  pthread_mutex_unlock(&r->mu);
  if (!out->body) out->body = json_object();
  return out->status = MHD_HTTP_OK;
}

/* Consumes one armed failure: returns its status (and Retry-After) or 0. */
static int take_failure(rcv *r, struct reply *out) {
  int status = 0;
  pthread_mutex_lock(&r->mu);
  if (r->fail_n > 0) {
    r->fail_n--;
    status = r->fail_status;
    memcpy(out->retry, r->fail_retry, sizeof out->retry);
  }
  pthread_mutex_unlock(&r->mu);
  return status;
}

/* splitmix64: one 64-bit step of the receiver's own generator. */
static uint64_t next_rand(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

static double unit_rand(uint64_t *s) { /* uniform in [0, 1) */
  return (double)(next_rand(s) >> 11) * 0x1.0p-53;
}

/* One roll per PUT: the action, its failure status and Retry-After into out, and the
 * request's delay into q. */
static enum chaos_act roll_chaos(rcv *r, struct req *q, struct reply *out) {
  struct chaos *c = &r->chaos;
  enum chaos_act act = CHAOS_NONE;
  double u;
  pthread_mutex_lock(&r->mu);
  if (c->on) {
    u = unit_rand(&c->rng);
    if (u < c->drop) {
      act = CHAOS_DROP;
    } else if (u < c->drop + c->fail) {
      act = CHAOS_FAIL;
      out->status = c->statuses[next_rand(&c->rng) % c->nstatuses];
      if (unit_rand(&c->rng) < c->retry_p) memcpy(out->retry, c->retry, sizeof out->retry);
    } else if (u < c->drop + c->fail + c->drop_applied) {
      act = CHAOS_DROP_APPLIED;
    }
    q->delay_ms = c->delay_lo +
                  (int)(next_rand(&c->rng) % ((uint64_t)c->delay_hi - (uint64_t)c->delay_lo + 1));
  }
  pthread_mutex_unlock(&r->mu);
  return act;
}

static int put_state(rcv *r, const char *path, const struct req *q, struct reply *out) {
  json_error_t e;
  char msg[sizeof e.text + 96];
  /* JSON_ALLOW_NUL: "\u0000" is valid JSON, and wsup's own encoder writes it for a NUL byte. */
  json_t *patch = json_loadb(q->buf ? q->buf : "", q->len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e), *cur, *next;
  if (!patch) {
    snprintf(msg, sizeof msg, "%s at line %d, column %d (byte %d)", e.text, e.line, e.column,
             e.position);
    return fail_with(out, MHD_HTTP_BAD_REQUEST, msg);
  }
  if (!json_is_object(patch)) {
    json_decref(patch);
    return fail_with(out, MHD_HTTP_BAD_REQUEST, "body is not a JSON object");
  }
  /* Fold into a copy so holders of the old snapshot never see it change. */
  pthread_mutex_lock(&r->mu);
  cur = json_object_get(r->states, path);
  next = cur ? json_deep_copy(cur) : json_object();
  if (next && (rcv_fold(next, patch, (const char *const *)r->keys, r->nkeys) != 0 ||
               json_object_set_nocheck(r->states, path, next) != 0)) {
    json_decref(next);
    next = NULL;
  }
  pthread_mutex_unlock(&r->mu);
  json_decref(patch);
  if (!next) return fail_with(out, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
  out->body = next;
  return out->status = MHD_HTTP_OK;
}

/* Sets out, and q->drop and q->delay_ms for chaos; returns whether the PUT was applied. */
static bool route(rcv *r, struct req *q, const char *method, const char *url,
                  struct reply *out) {
  int status;
  enum chaos_act act;
  if (!path_ok(url)) fail_with(out, MHD_HTTP_NOT_FOUND, "no such path");
  else if (strcmp(method, MHD_HTTP_METHOD_GET) == 0) get_state(r, url, out);
  else if (strcmp(method, MHD_HTTP_METHOD_PUT) != 0)
    fail_with(out, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed");
  else if ((status = take_failure(r, out)) != 0) fail_with(out, status, "injected failure");
  else if ((act = roll_chaos(r, q, out)) == CHAOS_DROP) q->drop = true;
  else if (act == CHAOS_FAIL) fail_with(out, out->status, "injected failure");
  else if (q->too_big) fail_with(out, MHD_HTTP_CONTENT_TOO_LARGE, "body too large");
  else {
    q->drop = act == CHAOS_DROP_APPLIED;
    return put_state(r, url, q, out) == MHD_HTTP_OK;
  }
  return false;
}

/* Returns a new response carrying rep (compact JSON keeps integers exact), or NULL. */
static struct MHD_Response *respond(const rcv *r, const struct reply *rep) {
  char *s = rep->body ? json_dumps(rep->body, JSON_COMPACT) : NULL;
  struct MHD_Response *resp =
      s ? r->api.MHD_create_response_from_buffer(strlen(s), s, MHD_RESPMEM_MUST_FREE) : NULL;
  if (!resp) {
    free(s);
    return NULL;
  }
  r->api.MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
  if (rep->status == MHD_HTTP_METHOD_NOT_ALLOWED)
    r->api.MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, PUT");
  if (rep->retry[0]) r->api.MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, rep->retry);
  return resp;
}

/* Decides once per request (sending may wait for the delay), counts it, and calls the
 * hook outside the lock so that the hook may call us. A dropped request gets no
 * response object. */
static int decide(rcv *r, struct req *q, const char *method, const char *url) {
  struct reply rep = {0};
  rcv_log_fn fn;
  void *ud;
  bool applied = route(r, q, method, url, &rep);
  pthread_mutex_lock(&r->mu);
  r->requests++;
  if (!q->drop) {
    r->by_status[rep.status]++;
  } else {
    r->dropped++;
    r->dropped_applied += applied;
  }
  fn = r->log_fn;
  ud = r->log_ud;
  pthread_mutex_unlock(&r->mu);
  if (fn) fn(ud, method, url, q->drop ? 0 : rep.status, rep.status == MHD_HTTP_OK ? rep.body : NULL);
  q->decided = true;
  q->status = rep.status;
  q->resp = q->drop ? NULL : respond(r, &rep);
  json_decref(rep.body);
  free(q->buf);
  q->buf = NULL;
  return q->drop || q->resp ? 0 : -1;
}

/* ---- body, delay and the MHD callbacks ---- */

/* Keeps body bytes up to max_body; past that only the 413 verdict is kept. MHD hands
 * over chunks of its read buffer, so growing by exactly n is few enough reallocs. */
static int feed(rcv *r, struct req *q, const char *data, size_t n) {
  char *p;
  if (!q->want_body || q->too_big) return 0;
  if (n > r->max_body - q->len) {
    q->too_big = true;
    return 0;
  }
  if (!(p = realloc(q->buf, q->len + n))) return -1;
  q->buf = p;
  memcpy(q->buf + q->len, data, n);
  q->len += n;
  return 0;
}

static long long now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Suspends c until the timer thread resumes it; false when no delay applies. */
static bool park(rcv *r, struct MHD_Connection *c, struct req *q) {
  bool parked;
  long long ms;
  q->waited = true;
  pthread_mutex_lock(&r->mu);
  ms = (long long)r->delay_ms + q->delay_ms;
  parked = ms > 0 && !r->stopping;
  if (parked) {
    q->due_ms = now_ms() + ms;
    q->conn = c;
    r->api.MHD_suspend_connection(c); /* before listing it, so no resume can come first */
    q->next = r->parked;
    r->parked = q;
    pthread_cond_signal(&r->cv);
  }
  pthread_mutex_unlock(&r->mu);
  return parked;
}

/* Unlinks the parked requests due by now; lowers *next to the earliest one left. */
static struct req *take_due(rcv *r, long long now, long long *next) {
  struct req *due = NULL, **pp = &r->parked, *q;
  while ((q = *pp) != NULL) {
    if (q->due_ms <= now) {
      *pp = q->next;
      q->next = due;
      due = q;
    } else {
      if (q->due_ms < *next) *next = q->due_ms;
      pp = &q->next;
    }
  }
  return due;
}

/* Called without the lock: MHD may finish and free q as soon as it is resumed. */
static void resume_all(const rcv *r, struct req *q) {
  while (q) {
    struct req *next = q->next;
    r->api.MHD_resume_connection(q->conn);
    q = next;
  }
}

static void *timer_main(void *arg) {
  rcv *r = arg;
  long long next;
  struct req *due;
  struct timespec ts;
  pthread_mutex_lock(&r->mu);
  while (!r->stopping) {
    next = LLONG_MAX;
    if ((due = take_due(r, now_ms(), &next)) != NULL) {
      pthread_mutex_unlock(&r->mu);
      resume_all(r, due);
      pthread_mutex_lock(&r->mu);
    } else if (next == LLONG_MAX) {
      pthread_cond_wait(&r->cv, &r->mu);
    } else {
      ts.tv_sec = next / 1000;
      ts.tv_nsec = (next % 1000) * 1000000;
      pthread_cond_timedwait(&r->cv, &r->mu, &ts);
    }
  }
  pthread_mutex_unlock(&r->mu);
  return NULL;
}

/* MHD calls this on the headers, per body chunk, at the end, and after a resume. */
static enum MHD_Result on_access(void *cls, struct MHD_Connection *c, const char *url,
                                 const char *method, const char *version, const char *data,
                                 size_t *size, void **slot) {
  rcv *r = cls;
  struct req *q = *slot;
  const char *len;
  enum MHD_Result rc;
  (void)version;
  if (!q) {
    if (!(q = calloc(1, sizeof *q))) return MHD_NO;
    *slot = q;
    q->want_body = path_ok(url) && strcmp(method, MHD_HTTP_METHOD_PUT) == 0;
    /* A declared oversize is refused now, before any of it is read. */
    len = r->api.MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    q->too_big = q->want_body && len && strtoull(len, NULL, 10) > r->max_body;
    if (!q->too_big) return MHD_YES;
  } else if (*size) {
    rc = feed(r, q, data, *size) == 0 ? MHD_YES : MHD_NO;
    *size = 0;
    return rc;
  }
  if (!q->decided && decide(r, q, method, url) != 0) return MHD_NO;
  if (!q->waited && park(r, c, q)) return MHD_YES;
  if (q->drop) return MHD_NO; /* closes the connection without a response */
  rc = r->api.MHD_queue_response(c, (unsigned int)q->status, q->resp);
  r->api.MHD_destroy_response(q->resp);
  q->resp = NULL;
  return rc;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **slot,
                         enum MHD_RequestTerminationCode why) {
  const rcv *r = cls;
  struct req *q = *slot;
  (void)c, (void)why;
  if (!q) return;
  if (q->resp) r->api.MHD_destroy_response(q->resp);
  free(q->buf);
  free(q);
  *slot = NULL;
}

/* Keeps MHD's first message so a failed start can say why. Until start returns only
 * the starting thread writes it, and after that nobody reads it: no lock needed. */
static void on_log(void *cls, const char *fmt, va_list ap) {
  rcv *r = cls;
  size_t n;
  if (r->err[0]) return;
  vsnprintf(r->err, sizeof r->err, fmt, ap);
  n = strlen(r->err);
  if (n && r->err[n - 1] == '\n') r->err[n - 1] = '\0';
}

/* ---- life cycle ---- */

union addr {
  struct sockaddr sa;
  struct sockaddr_in v4;
  struct sockaddr_in6 v6;
};

/* Numeric hosts only: this is a test fixture, not a resolver. */
static int make_addr(const char *host, int port, union addr *a, unsigned int *flags) {
  memset(a, 0, sizeof *a);
  if (port < 0 || port > 65535) return -1;
  if (inet_pton(AF_INET, host, &a->v4.sin_addr) == 1) {
    a->v4.sin_family = AF_INET;
    a->v4.sin_port = htons((uint16_t)port);
  } else if (inet_pton(AF_INET6, host, &a->v6.sin6_addr) == 1) {
    a->v6.sin6_family = AF_INET6;
    a->v6.sin6_port = htons((uint16_t)port);
    *flags |= MHD_USE_IPv6;
  } else {
    return -1;
  }
  return 0;
}

static void destroy(rcv *r) {
  for (size_t i = 0; i < r->nkeys; i++) free(r->keys[i]);
  free(r->keys);
  json_decref(r->states);
  pthread_cond_destroy(&r->cv);
  pthread_mutex_destroy(&r->mu);
  free(r);
}

/* Allocates r with its lock, its condition (on the monotonic clock) and key copies. */
static rcv *create(const rcv_opts *o) {
  const char *const *keys = o->merge_keys ? o->merge_keys : default_keys;
  size_t n = o->merge_keys ? o->n_merge_keys : 2;
  pthread_condattr_t ca;
  rcv *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  pthread_mutex_init(&r->mu, NULL);
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&r->cv, &ca);
  pthread_condattr_destroy(&ca);
  r->max_body = o->max_body ? o->max_body : RCV_MAX_BODY;
  r->states = json_object();
  r->keys = calloc(n ? n : 1, sizeof *r->keys);
  for (; r->keys && r->nkeys < n; r->nkeys++)
    if (!(r->keys[r->nkeys] = strdup(keys[r->nkeys]))) break;
  if (!r->states || !r->keys || r->nkeys < n) {
    destroy(r);
    return NULL;
  }
  return r;
}

static void stop_timer(rcv *r) {
  pthread_mutex_lock(&r->mu);
  r->stopping = true;
  pthread_cond_signal(&r->cv);
  pthread_mutex_unlock(&r->mu);
  pthread_join(r->timer, NULL);
}

static rcv *start_failed(rcv *r, const char *why, char *err, size_t errlen) {
  if (err && errlen) snprintf(err, errlen, "%s", why);
  if (r) destroy(r);
  return NULL;
}

static int hex_digit(char c) {
  return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* MHD_OPTION_UNESCAPE_CALLBACK: %HH decoded in place, as libmicrohttpd does, except %00,
 * which stays as it is: a path is a C string from here on, and a NUL would cut
 * "/worker/a%00b" to "/worker/a", another path with its own state. */
static size_t unescape_keep_nul(void *cls, struct MHD_Connection *conn, char *s) {
  char *w = s;
  (void)cls;
  (void)conn;
  for (const char *p = s; *p; p++) {
    int hi, lo;
    if (*p == '%' && (hi = hex_digit(p[1])) >= 0 && (lo = hex_digit(p[2])) >= 0 && (hi | lo)) {
      *w++ = (char)(hi << 4 | lo);
      p += 2;
    } else {
      *w++ = *p;
    }
  }
  *w = '\0';
  return (size_t)(w - s);
}

rcv *rcv_start(const rcv_opts *o, char *err, size_t errlen) {
  const rcv_opts none = {0};
  /* poll, not epoll: libmicrohttpd 0.9.75 on epoll misses a client's half-close (FIN). */
  unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
                       MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
  const union MHD_DaemonInfo *info;
  union addr a;
  rcv *r;
  if (!o) o = &none;
  if (make_addr(o->host ? o->host : "127.0.0.1", o->port, &a, &flags) != 0)
    return start_failed(NULL, "bad host (numeric IPv4/IPv6 expected) or port", err, errlen);
  if (!(r = create(o))) return start_failed(NULL, "out of memory", err, errlen);
  if (dl_load(MHD_SO_NAME, &r->api, mhd_fns, sizeof mhd_fns / sizeof *mhd_fns, r->err, sizeof r->err) != 0)
    return start_failed(r, r->err, err, errlen);
  if (pthread_create(&r->timer, NULL, timer_main, r) != 0)
    return start_failed(r, "cannot start the timer thread", err, errlen);
  /* MHD binds to a, but names the port argument in its messages. */
  r->d = r->api.MHD_start_daemon(flags, (uint16_t)o->port, NULL, NULL, on_access, r,
                          MHD_OPTION_EXTERNAL_LOGGER, on_log, r, /* must come first */
                          MHD_OPTION_SOCK_ADDR, &a.sa,
                          MHD_OPTION_CONNECTION_LIMIT, RCV_CONN_LIMIT,
                          MHD_OPTION_CONNECTION_TIMEOUT, RCV_TIMEOUT_S,
                          MHD_OPTION_NOTIFY_COMPLETED, on_completed, r,
                          MHD_OPTION_UNESCAPE_CALLBACK, unescape_keep_nul, NULL,
                          MHD_OPTION_END);
  if (!r->d) {
    stop_timer(r);
    return start_failed(r, r->err[0] ? r->err : "cannot start the HTTP daemon", err, errlen);
  }
  info = r->api.MHD_get_daemon_info(r->d, MHD_DAEMON_INFO_BIND_PORT);
  r->port = info ? info->port : 0;
  return r;
}

void rcv_stop(rcv *r) {
  long long next = LLONG_MAX;
  struct req *left;
  if (!r) return;
  stop_timer(r); /* also ends parking, so MHD never stops with a connection suspended */
  pthread_mutex_lock(&r->mu);
  left = take_due(r, LLONG_MAX, &next);
  pthread_mutex_unlock(&r->mu);
  resume_all(r, left);
  r->api.MHD_stop_daemon(r->d);
  destroy(r);
}

/* ---- the caller's side ---- */

int rcv_port(const rcv *r) {
  return r->port;
}

json_t *rcv_state(rcv *r, const char *path) {
  json_t *s;
  pthread_mutex_lock(&r->mu);
  s = json_deep_copy(json_object_get(r->states, path)); /* NULL stays NULL */
  pthread_mutex_unlock(&r->mu);
  return s;
}

void rcv_fail(rcv *r, int n, int status, const char *retry_after) {
  pthread_mutex_lock(&r->mu);
  r->fail_n = n > 0 && status >= RCV_FINAL_MIN && status < RCV_STATUSES ? n : 0;
  r->fail_status = status;
  snprintf(r->fail_retry, sizeof r->fail_retry, "%s", retry_after ? retry_after : "");
  pthread_mutex_unlock(&r->mu);
}

void rcv_delay(rcv *r, int ms) {
  pthread_mutex_lock(&r->mu);
  r->delay_ms = ms > 0 ? ms : 0;
  pthread_mutex_unlock(&r->mu);
}

static bool prob_ok(double p) { return p >= 0 && p <= 1; } /* false for NaN too */

/* Validates o into c (which then needs only swapping in). */
static int chaos_from(const rcv_chaos_opts *o, struct chaos *c) {
  static const int def_statuses[] = {500, 503};
  const int *st = o->statuses && o->n_statuses ? o->statuses : def_statuses;
  size_t n = o->statuses && o->n_statuses ? o->n_statuses : 2;
  const char *ra = o->retry_after_value ? o->retry_after_value : "1";
  if (!prob_ok(o->fail) || !prob_ok(o->drop) || !prob_ok(o->drop_after_apply) ||
      !prob_ok(o->retry_after) || o->fail + o->drop + o->drop_after_apply > 1.0 + 1e-9 ||
      n > RCV_CHAOS_STATUSES || o->delay_min_ms < 0 || o->delay_max_ms < o->delay_min_ms ||
      strlen(ra) >= sizeof c->retry)
    return -1;
  for (const char *p = ra; *p; p++)
    if ((unsigned char)*p < 0x20 || *p == 0x7f) return -1;
  memset(c, 0, sizeof *c);
  for (size_t i = 0; i < n; i++) {
    if (st[i] < RCV_FINAL_MIN || st[i] >= RCV_STATUSES) return -1;
    c->statuses[i] = st[i];
  }
  c->on = true;
  c->nstatuses = n;
  c->fail = o->fail;
  c->drop = o->drop;
  c->drop_applied = o->drop_after_apply;
  c->retry_p = o->retry_after;
  snprintf(c->retry, sizeof c->retry, "%s", ra);
  c->delay_lo = o->delay_min_ms;
  c->delay_hi = o->delay_max_ms;
  c->rng = o->seed;
  return 0;
}

int rcv_chaos(rcv *r, const rcv_chaos_opts *o) {
  struct chaos c = {0};
  if (o && chaos_from(o, &c) != 0) return -1;
  pthread_mutex_lock(&r->mu);
  r->chaos = c;
  pthread_mutex_unlock(&r->mu);
  return 0;
}

unsigned long rcv_dropped(rcv *r, unsigned long *applied) {
  unsigned long n;
  pthread_mutex_lock(&r->mu);
  n = r->dropped;
  if (applied) *applied = r->dropped_applied;
  pthread_mutex_unlock(&r->mu);
  return n;
}

size_t rcv_stats(rcv *r, int *statuses, unsigned long *counts, size_t max) {
  return rcv_snapshot(r, NULL, statuses, counts, max);
}

size_t rcv_snapshot(rcv *r, rcv_totals *t, int *statuses, unsigned long *counts, size_t max) {
  size_t n = 0;
  pthread_mutex_lock(&r->mu);
  if (t) {
    t->requests = r->requests;
    t->dropped = r->dropped;
    t->dropped_applied = r->dropped_applied;
  }
  for (int s = 0; s < RCV_STATUSES; s++) {
    if (!r->by_status[s]) continue;
    if (n < max) {
      statuses[n] = s;
      counts[n] = r->by_status[s];
    }
    n++;
  }
  pthread_mutex_unlock(&r->mu);
  return n;
}

unsigned long rcv_requests(rcv *r) {
  unsigned long n;
  pthread_mutex_lock(&r->mu);
  n = r->requests;
  pthread_mutex_unlock(&r->mu);
  return n;
}

void rcv_on_request(rcv *r, rcv_log_fn fn, void *ud) {
  pthread_mutex_lock(&r->mu);
  r->log_fn = fn;
  r->log_ud = ud;
  pthread_mutex_unlock(&r->mu);
}
