/* test_http.c — http.c against an in-process libmicrohttpd server on 127.0.0.1. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>
#include <curl/curl.h>
#include <microhttpd.h>
#include <netdb.h>
#include "http.h"

/* ---- server ---- */

typedef struct srv {
  struct MHD_Daemon *d;
  int port;
  atomic_int opened, open;   /* connections accepted so far / currently open */
} srv;

typedef struct upload { char *p; size_t len; } upload;

static void on_conn(void *cls, struct MHD_Connection *conn, void **sctx, enum MHD_ConnectionNotificationCode code) {
  (void)conn; (void)sctx;
  srv *s = cls;
  if (code == MHD_CONNECTION_NOTIFY_STARTED) { atomic_fetch_add(&s->opened, 1); atomic_fetch_add(&s->open, 1); }
  else atomic_fetch_sub(&s->open, 1);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe) {
  (void)cls; (void)conn; (void)toe;
  upload *u = *con_cls;
  if (u) { free(u->p); free(u); }
  *con_cls = NULL;
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned code, const char *body, size_t len, ...) {
  struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
  va_list ap;
  va_start(ap, len);
  for (const char *n; (n = va_arg(ap, const char *));) MHD_add_response_header(r, n, va_arg(ap, const char *));
  va_end(ap);
  enum MHD_Result ok = MHD_queue_response(conn, code, r);
  MHD_destroy_response(r);
  return ok;
}

static const char *hv(struct MHD_Connection *conn, const char *name) {
  const char *v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, name);
  return v ? v : "none";
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                               const char *version, const char *data, size_t *size, void **con_cls) {
  (void)cls; (void)version;
  upload *u = *con_cls;
  if (!u) { *con_cls = calloc(1, sizeof(upload)); return *con_cls ? MHD_YES : MHD_NO; }
  if (*size) {
    char *p = realloc(u->p, u->len + *size);
    if (!p) return MHD_NO;
    memcpy(p + u->len, data, *size);
    u->p = p; u->len += *size; *size = 0;
    return MHD_YES;
  }
  if (!strcmp(url, "/echo"))
    return reply(conn, 200, u->p ? u->p : "", u->len, "X-Method", method, "X-Padded", "  padded value  ",
                 "X-Got-Req", hv(conn, "X-Req"), "X-Got-Ctype", hv(conn, "Content-Type"),
                 "X-Got-Expect", hv(conn, "Expect"), "X-Got-Clen", hv(conn, "Content-Length"), (const char *)NULL);
  if (!strcmp(url, "/close")) return reply(conn, 200, "bye", 3, "Connection", "close", (const char *)NULL);
  if (!strcmp(url, "/busy")) return reply(conn, 503, "busy", 4, "Retry-After", "1", (const char *)NULL);
  if (!strcmp(url, "/stall")) { sleep(1); return reply(conn, 200, "late", 4, (const char *)NULL); }
  if (!strcmp(url, "/redir")) return reply(conn, 302, "", 0, "Location", "/echo", (const char *)NULL);
  if (!strcmp(url, "/big")) {
    static const size_t n = 100000;
    char *b = malloc(n);
    if (!b) return MHD_NO;
    memset(b, 'x', n);
    enum MHD_Result ok = reply(conn, 200, b, n, (const char *)NULL);
    free(b);
    return ok;
  }
  return reply(conn, 404, "", 0, (const char *)NULL);
}

static int srv_setup(void **state) {
  srv *s = calloc(1, sizeof *s);
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
  s->d = MHD_start_daemon(MHD_USE_AUTO | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0, NULL,
                          NULL, handler, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&a,
                          MHD_OPTION_NOTIFY_CONNECTION, on_conn, s, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                          MHD_OPTION_END);
  if (!s->d) return -1;
  s->port = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT)->port;
  setenv("no_proxy", "*", 1);  /* never send test traffic to a proxy */
  *state = s;
  return 0;
}

static int srv_teardown(void **state) {
  srv *s = *state;
  MHD_stop_daemon(s->d);
  free(s);
  return 0;
}

/* ---- client harness ---- */

#define MAXH 32
typedef struct got {
  int calls;
  long status;
  int err;
  char errmsg[CURL_ERROR_SIZE];
  char *body;
  size_t body_len, bytes_sent, n;
  int truncated;
  char name[MAXH][64], value[MAXH][256];
} got;

static void on_done(void *ud, const http_res *r) {
  got *g = ud;
  g->calls++;
  g->status = r->status;
  g->err = r->err;
  snprintf(g->errmsg, sizeof g->errmsg, "%s", r->errmsg);
  free(g->body);
  g->body = malloc(r->body_len + 1);
  memcpy(g->body, r->body, r->body_len + 1);
  g->body_len = r->body_len;
  g->bytes_sent = r->bytes_sent;
  g->truncated = r->truncated;
  g->n = r->n_headers < MAXH ? r->n_headers : MAXH;
  for (size_t i = 0; i < g->n; i++) {
    snprintf(g->name[i], sizeof g->name[i], "%s", r->headers[i].name);
    snprintf(g->value[i], sizeof g->value[i], "%s", r->headers[i].value);
  }
}

static const char *hdr(const got *g, const char *name) {
  for (size_t i = 0; i < g->n; i++)
    if (!strcmp(g->name[i], name)) return g->value[i];
  return "<absent>";
}

typedef struct env {
  uv_loop_t loop;
  uv_timer_t watchdog;
  int fired, closed;
  http_client *c;
  char url[128];
} env;

static void on_watchdog(uv_timer_t *t) { env *e = t->data; e->fired = 1; uv_stop(t->loop); }
static void on_closed(void *ud) { ((env *)ud)->closed++; }

static void env_init(env *e) {
  memset(e, 0, sizeof *e);
  assert_int_equal(uv_loop_init(&e->loop), 0);
  uv_timer_init(&e->loop, &e->watchdog);      /* unref'd: fails a hung test without keeping the loop alive */
  e->watchdog.data = e;
  uv_timer_start(&e->watchdog, on_watchdog, 10000, 0);
  uv_unref((uv_handle_t *)&e->watchdog);
  char err[256];
  assert_non_null(e->c = http_client_new(&e->loop, err, sizeof err));
}

static const char *url(env *e, srv *s, const char *path) {
  snprintf(e->url, sizeof e->url, "http://127.0.0.1:%d%s", s->port, path);
  return e->url;
}

/* Runs the loop until it exits by itself; fails if the watchdog had to stop it. */
static void run(env *e) {
  uv_run(&e->loop, UV_RUN_DEFAULT);
  assert_int_equal(e->fired, 0);
}

static void env_done(env *e) {
  if (e->c) http_client_close(e->c, on_closed, e);
  run(e);
  assert_int_equal(e->closed, 1);
  uv_close((uv_handle_t *)&e->watchdog, NULL);
  uv_run(&e->loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&e->loop), 0);   /* every client handle was closed */
}

static void start(env *e, const http_req *r, got *g) {
  char err[128];
  assert_non_null(http_start(e->c, r, on_done, g, err, sizeof err));
}

/* ---- tests ---- */

static void test_echo_put(void **state) {
  srv *s = *state;
  env e; env_init(&e);
  const char *h[] = { "Content-Type: application/json", "X-Req: hello" };
  const char *json = "{\"a\":1}";
  got g1 = {0}, g2 = {0}, g3 = {0};
  start(&e, &(http_req){ .method = "PUT", .url = url(&e, s, "/echo"), .headers = h, .n_headers = 2,
                         .body = json, .body_len = strlen(json) }, &g1);
  size_t n = 1536 * 1024;                         /* > 1 MiB: curl 7.88 would add Expect: 100-continue */
  char *big = malloc(n);
  for (size_t i = 0; i < n; i++) big[i] = (char)('a' + i % 26);
  start(&e, &(http_req){ .method = "PUT", .url = e.url, .body = big, .body_len = n, .max_body = 2 * n }, &g2);
  memset(big, 0, n);                              /* the body was copied */
  start(&e, &(http_req){ .method = "POST", .url = e.url }, &g3);
  assert_int_equal(g1.calls + g2.calls + g3.calls, 0); /* never called from inside http_start */
  assert_int_equal(http_active(e.c), 3);
  run(&e);
  assert_int_equal(http_active(e.c), 0);
  assert_int_equal(g1.calls, 1);
  assert_int_equal(g1.status, 200);
  assert_int_equal(g1.err, 0);
  assert_string_equal(g1.errmsg, "");
  assert_int_equal(g1.body_len, strlen(json));
  assert_string_equal(g1.body, json);
  assert_int_equal(g1.bytes_sent, strlen(json));
  assert_string_equal(hdr(&g1, "x-method"), "PUT");
  assert_string_equal(hdr(&g1, "x-padded"), "padded value");
  assert_string_equal(hdr(&g1, "x-got-req"), "hello");
  assert_string_equal(hdr(&g1, "x-got-ctype"), "application/json");
  assert_string_equal(hdr(&g1, "x-got-expect"), "none");
  assert_string_equal(hdr(&g1, "content-length"), "7");
  for (size_t i = 0; i < g1.n; i++)
    for (const char *p = g1.name[i]; *p; p++) assert_false(*p >= 'A' && *p <= 'Z');
  assert_int_equal(g2.calls, 1);
  assert_int_equal(g2.status, 200);
  assert_int_equal(g2.bytes_sent, n);
  assert_int_equal(g2.body_len, n);
  for (size_t i = 0; i < n; i++) big[i] = (char)('a' + i % 26);
  assert_memory_equal(g2.body, big, n);
  assert_string_equal(hdr(&g2, "x-got-ctype"), "none"); /* no form Content-Type invented */
  assert_string_equal(hdr(&g2, "x-got-expect"), "none");
  assert_int_equal(g3.status, 200);
  assert_string_equal(hdr(&g3, "x-method"), "POST");
  assert_string_equal(hdr(&g3, "x-got-clen"), "0");   /* NULL body on POST is an empty body */
  assert_int_equal(g3.body_len, 0);
  assert_string_equal(g3.body, "");
  free(big); free(g1.body); free(g2.body); free(g3.body);
  env_done(&e);
}

static void test_busy_retry_after(void **state) {
  srv *s = *state;
  env e; env_init(&e);
  got g = {0};
  start(&e, &(http_req){ .url = url(&e, s, "/busy") }, &g);
  run(&e);
  assert_int_equal(g.calls, 1);
  assert_int_equal(g.status, 503);
  assert_int_equal(g.err, 0);
  assert_string_equal(g.body, "busy");
  assert_string_equal(hdr(&g, "retry-after"), "1");
  assert_int_equal(http_retry_after_ms(hdr(&g, "retry-after"), time(NULL)), 1000);
  free(g.body);
  env_done(&e);
}

static void test_redirect_headers_reset(void **state) {
  srv *s = *state;
  env e; env_init(&e);
  got g1 = {0}, g2 = {0};
  start(&e, &(http_req){ .url = url(&e, s, "/redir"), .max_redirects = 3 }, &g1);
  start(&e, &(http_req){ .url = e.url }, &g2);
  run(&e);
  assert_int_equal(g1.status, 200);
  assert_string_equal(hdr(&g1, "location"), "<absent>");               /* 302's headers were dropped */
  assert_string_equal(hdr(&g1, "x-method"), "GET");
  assert_int_equal(g2.status, 302);
  assert_string_equal(hdr(&g2, "location"), "/echo");
  free(g1.body); free(g2.body);
  env_done(&e);
}

static void test_timeout(void **state) {
  srv *s = *state;
  env e; env_init(&e);
  got g = {0};
  uint64_t t0 = uv_hrtime();
  start(&e, &(http_req){ .url = url(&e, s, "/stall"), .timeout_ms = 150 }, &g);
  run(&e);
  uint64_t ms = (uv_hrtime() - t0) / 1000000;
  assert_int_equal(g.calls, 1);
  assert_int_equal(g.err, CURLE_OPERATION_TIMEDOUT);
  assert_int_equal(g.status, 0);
  assert_true(strlen(g.errmsg) > 0);
  assert_in_range(ms, 140, 900);
  free(g.body);
  env_done(&e);
}

static void test_body_limit(void **state) {
  srv *s = *state;
  env e; env_init(&e);
  got g1 = {0}, g2 = {0};
  start(&e, &(http_req){ .url = url(&e, s, "/big"), .max_body = 1000 }, &g1);
  start(&e, &(http_req){ .url = e.url }, &g2);
  run(&e);
  assert_int_equal(g1.calls, 1);
  assert_int_not_equal(g1.err, 0);
  assert_int_equal(g1.status, 0);
  assert_string_equal(g1.errmsg, "response body over limit");
  assert_true(g1.body_len <= 1000);
  assert_int_equal(g2.err, 0);
  assert_int_equal(g2.status, 200);
  assert_int_equal(g2.body_len, 100000);
  free(g1.body); free(g2.body);
  env_done(&e);
}

/* truncate_body: a body over max_body is cut to it and the answer still counts; the handle,
 * pooled, forgets the flag for the next request. */
static void test_body_truncated(void **state) {
  srv *s = *state;
  env e; env_init(&e);
  got g1 = {0}, g2 = {0}, g3 = {0};
  start(&e, &(http_req){ .url = url(&e, s, "/big"), .max_body = 1000, .truncate_body = 1 }, &g1);
  run(&e);
  start(&e, &(http_req){ .url = e.url, .max_body = 100000, .truncate_body = 1 }, &g2);
  run(&e);
  start(&e, &(http_req){ .url = e.url, .max_body = 1000 }, &g3);
  run(&e);
  assert_int_equal(g1.err, 0);
  assert_int_equal(g1.status, 200);
  assert_int_equal(g1.body_len, 1000);
  assert_true(g1.truncated);
  assert_int_equal(g2.err, 0);
  assert_int_equal(g2.body_len, 100000); /* exactly the limit: whole, not truncated */
  assert_false(g2.truncated);
  assert_int_not_equal(g3.err, 0);
  assert_false(g3.truncated);
  free(g1.body); free(g2.body); free(g3.body);
  env_done(&e);
}

static void test_refused(void **state) {
  (void)state;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
  socklen_t len = sizeof a;
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
  close(fd);
  env e; env_init(&e);
  got g = {0};
  snprintf(e.url, sizeof e.url, "http://127.0.0.1:%d/", ntohs(a.sin_port));
  start(&e, &(http_req){ .url = e.url, .connect_timeout_ms = 2000 }, &g);
  run(&e);
  assert_int_equal(g.calls, 1);
  assert_int_equal(g.err, CURLE_COULDNT_CONNECT);
  assert_int_equal(g.status, 0);
  assert_true(strlen(g.errmsg) > 0);
  free(g.body);
  env_done(&e);
}

static void test_rejects_bad_request(void **state) {
  srv *s = *state;
  env e; env_init(&e);
  got g = {0};
  char err[128] = "";
  const char *crlf[] = { "X-A: 1\r\nX-Injected: 2" }, *lf[] = { "X-A: 1\n" }, *noname[] = { ": v" };
  assert_null(http_start(e.c, &(http_req){ .url = url(&e, s, "/echo"), .headers = crlf, .n_headers = 1 }, on_done, &g, err, sizeof err));
  assert_true(strstr(err, "CR") != NULL);
  assert_null(http_start(e.c, &(http_req){ .url = e.url, .headers = lf, .n_headers = 1 }, on_done, &g, err, sizeof err));
  assert_null(http_start(e.c, &(http_req){ .url = e.url, .headers = noname, .n_headers = 1 }, on_done, &g, NULL, 0));
  assert_null(http_start(e.c, &(http_req){ .method = "GE T", .url = e.url }, on_done, &g, err, sizeof err));
  assert_null(http_start(e.c, &(http_req){ .url = "http://127.0.0.1/a b" }, on_done, &g, err, sizeof err));
  assert_null(http_start(e.c, &(http_req){ .url = NULL }, on_done, &g, err, sizeof err));
  assert_int_equal(http_active(e.c), 0);
  run(&e);
  assert_int_equal(g.calls, 0);
  /* valid syntax but a scheme curl may not use: fails later, from the loop */
  assert_non_null(http_start(e.c, &(http_req){ .url = "ftp://127.0.0.1/x" }, on_done, &g, err, sizeof err));
  assert_int_equal(g.calls, 0);
  run(&e);
  assert_int_equal(g.calls, 1);
  assert_int_equal(g.err, CURLE_UNSUPPORTED_PROTOCOL);
  assert_int_equal(g.status, 0);
  free(g.body);
  env_done(&e);
}

/* Reentrancy: cancel before run, cancel and start from a done callback, close the client from one. */
typedef struct chain { env *e; got g; http_xfer *victim; int step; } chain;

static void chain_done(void *ud, const http_res *r) {
  chain *ch = ud;
  on_done(&ch->g, r);
  if (ch->step++ == 0) {
    http_cancel(ch->victim);                       /* in flight elsewhere: never reported */
    char err[64];
    assert_non_null(http_start(ch->e->c, &(http_req){ .url = ch->e->url }, chain_done, ch, err, sizeof err));
  } else {
    http_client_close(ch->e->c, on_closed, ch->e);
    ch->e->c = NULL;
  }
}

static void test_reentrancy(void **state) {
  srv *s = *state;
  env e; env_init(&e);
  got never = {0};
  chain ch = { .e = &e };
  http_xfer *a = http_start(e.c, &(http_req){ .url = url(&e, s, "/stall") }, on_done, &never, NULL, 0);
  assert_non_null(a);
  http_cancel(a);
  assert_int_equal(http_active(e.c), 0);
  ch.victim = http_start(e.c, &(http_req){ .url = e.url }, on_done, &never, NULL, 0);
  assert_non_null(ch.victim);
  assert_non_null(http_start(e.c, &(http_req){ .url = url(&e, s, "/echo") }, chain_done, &ch, NULL, 0));
  /* a transfer still running when the client is closed is dropped silently */
  assert_non_null(http_start(e.c, &(http_req){ .url = url(&e, s, "/stall"), .timeout_ms = 5000 }, on_done, &never, NULL, 0));
  url(&e, s, "/echo");
  run(&e);
  assert_int_equal(never.calls, 0);
  assert_int_equal(ch.g.calls, 2);
  assert_int_equal(ch.g.status, 200);
  assert_int_equal(e.closed, 1);
  free(ch.g.body);
  env_done(&e);
}

#define NCONC 200
typedef struct conc { got g[NCONC]; char body[NCONC][32]; } conc;

static void test_concurrent_and_liveness(void **state) {
  srv *s = *state;
  env e; env_init(&e);
  conc *k = calloc(1, sizeof *k);
  int opened0 = atomic_load(&s->opened), first = 0;
  const char *h[] = { "Content-Type: application/json" };
  for (int round = 0; round < 2; round++) {
    for (int i = 0; i < NCONC; i++) {
      snprintf(k->body[i], sizeof k->body[i], "{\"n\":%d,\"r\":%d}", i, round);
      start(&e, &(http_req){ .method = "PUT", .url = url(&e, s, "/echo"), .headers = h, .n_headers = 1,
                             .body = k->body[i], .body_len = strlen(k->body[i]), .timeout_ms = 10000 }, &k->g[i]);
    }
    assert_int_equal(http_active(e.c), NCONC);
    run(&e);                                      /* returns by itself: idle cached sockets keep nothing alive */
    assert_int_equal(http_active(e.c), 0);
    for (int i = 0; i < NCONC; i++) {
      assert_int_equal(k->g[i].calls, round + 1);
      assert_int_equal(k->g[i].status, 200);
      assert_string_equal(k->g[i].body, k->body[i]);
    }
    int opened = atomic_load(&s->opened) - opened0;
    assert_in_range(opened, 1, NCONC);
    assert_true(atomic_load(&s->open) >= opened);  /* still connected: the client cached them */
    if (round == 0) first = opened;
    else assert_int_equal(opened, first);         /* second round reused every connection */
  }
  for (int i = 0; i < NCONC; i++) free(k->g[i].body);
  free(k);
  env_done(&e);
}

/* A pooled easy handle is reused without curl_easy_reset: nothing of one request may leak into the next. */
static void run_one(env *e, const http_req *r, got *g) {
  start(e, r, g);
  run(e);
  assert_int_equal(g->calls, 1);
  assert_int_equal(g->err, 0);
}

/* Claims fill a connection cache (shard) before the next is made; each shard keeps its own
 * connections, which its own requests reuse; closing a client with several shards frees them all. */
static void test_shards(void **state) {
  srv *s = *state;
  env e; env_init(&e);
  char err[128];
  int first[64], i;
  for (i = 0; i < 64; i++) first[i] = http_claim(e.c);
  for (i = 0; i < 64; i++) assert_int_equal(first[i], 0);
  assert_int_equal(http_claim(e.c), 1);           /* shard 0 is full */
  http_release(e.c, 0);
  assert_int_equal(http_claim(e.c), 0);           /* a released place is taken again, lowest shard first */
  http_release(e.c, -1);                          /* no-ops */
  http_release(e.c, 99);
  assert_int_equal(http_claim(e.c), 1);
  assert_null(http_start(e.c, &(http_req){ .url = url(&e, s, "/echo"), .shard = 2 }, on_done, NULL, err, sizeof err));
  assert_string_equal(err, "no such shard");
  assert_null(http_start(e.c, &(http_req){ .url = e.url, .shard = -1 }, on_done, NULL, err, sizeof err));

  got *g = calloc(4, sizeof *g);
  int opened0 = atomic_load(&s->opened);
  run_one(&e, &(http_req){ .method = "PUT", .url = url(&e, s, "/echo"), .body = "a", .body_len = 1 }, &g[0]);
  assert_int_equal(atomic_load(&s->opened) - opened0, 1);
  run_one(&e, &(http_req){ .method = "PUT", .url = e.url, .body = "b", .body_len = 1, .shard = 1 }, &g[1]);
  assert_int_equal(atomic_load(&s->opened) - opened0, 2); /* shard 1 cannot see shard 0's idle connection */
  run_one(&e, &(http_req){ .method = "PUT", .url = e.url, .body = "c", .body_len = 1, .shard = 0 }, &g[2]);
  run_one(&e, &(http_req){ .method = "PUT", .url = e.url, .body = "d", .body_len = 1, .shard = 1 }, &g[3]);
  assert_int_equal(atomic_load(&s->opened) - opened0, 2); /* each reused its own */
  for (i = 0; i < 4; i++) {
    assert_int_equal(g[i].status, 200);
    assert_int_equal(g[i].body_len, 1);
    assert_int_equal(g[i].body[0], "abcd"[i]);
    free(g[i].body);
  }
  free(g);
  env_done(&e);                                   /* both shards' timers and sockets closed, memory freed */
}

/* Concurrent claimants spread over several shards: every transfer completes, and a second round
 * reuses every connection of the first (each claimant finds its own shard's idle connection). */
static void test_shards_concurrent(void **state) {
  srv *s = *state;
  env e; env_init(&e);
  conc *k = calloc(1, sizeof *k);
  int shard[NCONC], opened0 = atomic_load(&s->opened), first = 0;
  for (int i = 0; i < NCONC; i++) shard[i] = http_claim(e.c);
  assert_int_equal(shard[NCONC - 1], (NCONC - 1) / 64);
  for (int round = 0; round < 2; round++) {
    for (int i = 0; i < NCONC; i++) {
      snprintf(k->body[i], sizeof k->body[i], "{\"n\":%d,\"r\":%d}", i, round);
      start(&e, &(http_req){ .method = "PUT", .url = url(&e, s, "/echo"), .body = k->body[i],
                             .body_len = strlen(k->body[i]), .shard = shard[i] }, &k->g[i]);
    }
    run(&e);
    for (int i = 0; i < NCONC; i++) {
      assert_int_equal(k->g[i].calls, round + 1);
      assert_string_equal(k->g[i].body, k->body[i]);
    }
    int opened = atomic_load(&s->opened) - opened0;
    if (round == 0) first = opened;
    else assert_int_equal(opened, first);
  }
  assert_true(first >= 4);                        /* at least one connection per shard */
  for (int i = 0; i < NCONC; i++) free(k->g[i].body);
  free(k);
  env_done(&e);
}

static void test_pooled_handle_no_leak(void **state) {
  srv *s = *state;
  env e; env_init(&e);
  const char *h[] = { "Content-Type: application/json", "X-Req: one" }, *h2[] = { "X-Req: two" };
  got *g = calloc(9, sizeof *g);                /* on the heap: a local array of got trips the padding check */
  run_one(&e, &(http_req){ .method = "PUT", .url = url(&e, s, "/echo"), .headers = h, .n_headers = 2, .body = "abc",
                           .body_len = 3, .timeout_ms = 300, .max_redirects = 2, .max_body = 10 }, &g[0]);
  assert_string_equal(hdr(&g[0], "x-got-req"), "one");
  run_one(&e, &(http_req){ .url = e.url }, &g[1]);              /* no headers, body, method, limit */
  assert_string_equal(hdr(&g[1], "x-method"), "GET");
  assert_string_equal(hdr(&g[1], "x-got-req"), "none");
  assert_string_equal(hdr(&g[1], "x-got-ctype"), "none");
  assert_string_equal(hdr(&g[1], "x-got-clen"), "none");
  assert_string_equal(g[1].body, "");
  run_one(&e, &(http_req){ .url = url(&e, s, "/stall") }, &g[2]); /* 1 s: no timeout left over */
  assert_int_equal(g[2].status, 200);
  assert_string_equal(g[2].body, "late");
  run_one(&e, &(http_req){ .url = url(&e, s, "/big") }, &g[3]);   /* no body limit left over */
  assert_int_equal(g[3].body_len, 100000);
  run_one(&e, &(http_req){ .method = "HEAD", .url = url(&e, s, "/echo"), .headers = h2, .n_headers = 1 }, &g[4]);
  assert_int_equal(g[4].status, 200);
  assert_string_equal(hdr(&g[4], "x-got-req"), "two");
  run_one(&e, &(http_req){ .method = "PUT", .url = e.url, .body = "xyz", .body_len = 3 }, &g[5]); /* not a HEAD */
  assert_string_equal(hdr(&g[5], "x-method"), "PUT");
  assert_string_equal(hdr(&g[5], "x-got-req"), "none");
  assert_string_equal(g[5].body, "xyz");
  run_one(&e, &(http_req){ .method = "DELETE", .url = e.url }, &g[6]);
  assert_string_equal(hdr(&g[6], "x-method"), "DELETE");
  assert_string_equal(hdr(&g[6], "x-got-clen"), "none");        /* no body left over */
  run_one(&e, &(http_req){ .url = url(&e, s, "/redir") }, &g[7]);  /* no redirect following left over */
  assert_int_equal(g[7].status, 302);
  run_one(&e, &(http_req){ .method = "GET", .url = url(&e, s, "/echo"), .body = "q", .body_len = 1 }, &g[8]);
  assert_string_equal(hdr(&g[8], "x-method"), "GET");
  assert_string_equal(g[8].body, "q");
  for (int i = 0; i < 9; i++) free(g[i].body);
  free(g);
  env_done(&e);
}

/* A socket's poll handle lives exactly as long as its fd: a number curl closed and then reused, by
 * curl's next connection or by anyone else on the loop, must work, also after the client is closed. */
typedef struct pipew { int fired; } pipew;
static void on_pipe(uv_poll_t *p, int status, int events) {
  (void)status; (void)events;
  char b[16];
  ((pipew *)p->data)->fired++;
  assert_true(read(p->io_watcher.fd, b, sizeof b) > 0);
}

static void test_fd_reuse(void **state) {
  srv *s = *state;
  env e; env_init(&e);
  int opened0 = atomic_load(&s->opened);
  for (int i = 0; i < 5; i++) {                 /* each connection closed by the server, the next one new */
    got g = {0};
    run_one(&e, &(http_req){ .url = url(&e, s, "/close") }, &g);
    assert_string_equal(g.body, "bye");
    free(g.body);
  }
  assert_int_equal(atomic_load(&s->opened) - opened0, 5);
  int fd[2];
  assert_int_equal(pipe(fd), 0);                /* likely the number of the socket curl just closed */
  uv_poll_t p;
  pipew pw = {0};
  p.data = &pw;
  assert_int_equal(uv_poll_init(&e.loop, &p, fd[0]), 0);
  assert_int_equal(uv_poll_start(&p, UV_READABLE, on_pipe), 0);
  uv_unref((uv_handle_t *)&p);
  got g = {0};
  run_one(&e, &(http_req){ .url = url(&e, s, "/echo") }, &g);  /* also an idle cached connection from here */
  free(g.body);
  http_client_close(e.c, on_closed, &e);
  e.c = NULL;
  run(&e);
  assert_int_equal(e.closed, 1);
  assert_int_equal(write(fd[1], "x", 1), 1);
  uv_ref((uv_handle_t *)&p);                    /* an unref'd-only loop is not alive: uv_run would not poll */
  for (int i = 0; i < 100 && !pw.fired; i++) uv_run(&e.loop, UV_RUN_NOWAIT);
  assert_int_equal(pw.fired, 1);
  uv_close((uv_handle_t *)&p, NULL);
  close(fd[0]); close(fd[1]);
  env_done(&e);
}

/* A host name goes through the threaded resolver, whose wakeup socket curl opens, watches and closes
 * itself (its number then reused by a connection before the REMOVE); "localhost" is ::1 first, a
 * socket closed on connect failure. The host name used is this machine's if it maps to 127.0.0.1. */
static void test_resolver_sockets(void **state) {
  srv *s = *state;
  env e; env_init(&e);
  got *g = calloc(8, sizeof *g);
  char host[64] = "localhost", u[160];
  struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai = NULL;
  int loopback = gethostname(host, sizeof host) == 0 && getaddrinfo(host, NULL, &hints, &ai) == 0;
  for (struct addrinfo *a = ai; loopback && a; a = a->ai_next) /* curl may try any of them: all must be loopback */
    loopback = a->ai_family == AF_INET ? ((struct sockaddr_in *)a->ai_addr)->sin_addr.s_addr == htonl(INADDR_LOOPBACK)
             : a->ai_family == AF_INET6 && IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)a->ai_addr)->sin6_addr);
  if (!loopback) snprintf(host, sizeof host, "localhost");
  if (ai) freeaddrinfo(ai);
  for (int round = 0; round < 3; round++) {
    snprintf(u, sizeof u, "http://%s:%d%s", round == 1 ? "localhost" : host, s->port, round ? "/echo" : "/close");
    for (int i = 0; i < 8; i++) start(&e, &(http_req){ .url = u, .timeout_ms = 5000 }, &g[i]);
    run(&e);
    for (int i = 0; i < 8; i++) {
      assert_int_equal(g[i].calls, round + 1);
      assert_int_equal(g[i].status, 200);
    }
  }
  for (int i = 0; i < 8; i++) free(g[i].body);
  free(g);
  env_done(&e);
}

/* An idle cached connection the peer closes: the client neither spins on it nor stays alive for it. */
static void test_idle_peer_close(void **state) {
  srv *s = *state;
  void *st2 = NULL;
  if (srv_setup(&st2) != 0 || !st2) { fail_msg("second server"); return; }
  env e; env_init(&e);
  got g1 = {0}, g2 = {0};
  char u[128];
  snprintf(u, sizeof u, "http://127.0.0.1:%d/echo", ((srv *)st2)->port);
  run_one(&e, &(http_req){ .url = u }, &g1);
  srv_teardown(&st2);                           /* closes the connection the client holds idle */
  struct rusage r0, r1;                         /* this (the loop's) thread only */
  getrusage(RUSAGE_THREAD, &r0);
  run_one(&e, &(http_req){ .url = url(&e, s, "/stall") }, &g2);   /* 1 s of loop with it closed */
  getrusage(RUSAGE_THREAD, &r1);
  double us = (double)(r1.ru_utime.tv_sec - r0.ru_utime.tv_sec + r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) * 1e6 +
              (double)(r1.ru_utime.tv_usec - r0.ru_utime.tv_usec + r1.ru_stime.tv_usec - r0.ru_stime.tv_usec);
  assert_true(us < 300000);
  assert_string_equal(g2.body, "late");
  free(g1.body); free(g2.body);
  env_done(&e);
}

static void test_client_new_says_why_it_fails(void **state) {
  char err[256] = "";
  (void)state;
  assert_null(http_client_new(NULL, err, sizeof err));
  assert_string_equal(err, "invalid argument");
}

/* A header line is known by its name whatever its case, in both of libcurl's forms ("Name:
 * value" and "Name;" for an empty value), and a longer name that starts the same is not it. */
static void test_header_is(void **state) {
  (void)state;
  assert_true(http_header_is("Content-Type: text/plain", "Content-Type"));
  assert_true(http_header_is("content-type:x", "Content-Type"));
  assert_true(http_header_is("CONTENT-TYPE;", "Content-Type"));
  assert_false(http_header_is("Content-Types: x", "Content-Type"));
  assert_false(http_header_is("Content-Typ: x", "Content-Type"));
  assert_false(http_header_is("X-Content-Type: x", "Content-Type"));
  assert_false(http_header_is("", "Content-Type"));
}

static void test_retry_after_parse(void **state) {
  (void)state;
  time_t now = time(NULL);
  char date[64];
  struct tm tm;
  assert_int_equal(http_retry_after_ms("1", now), 1000);
  assert_int_equal(http_retry_after_ms(" 120 ", now), 120000);
  assert_int_equal(http_retry_after_ms("0", now), 0);
  time_t fut = now + 120;
  strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", gmtime_r(&fut, &tm));
  assert_int_equal(http_retry_after_ms(date, now), 120000);
  time_t past = now - 3600;
  strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", gmtime_r(&past, &tm));
  assert_int_equal(http_retry_after_ms(date, now), 0);
  /* The obsolete forms a recipient must accept (RFC 9110 5.6.7), and a fixed date. */
  strftime(date, sizeof date, "%A, %d-%b-%y %H:%M:%S GMT", gmtime_r(&fut, &tm));
  assert_int_equal(http_retry_after_ms(date, now), 120000);
  strftime(date, sizeof date, "%a %b %e %H:%M:%S %Y", gmtime_r(&fut, &tm));
  assert_int_equal(http_retry_after_ms(date, now), 120000);
  assert_int_equal(http_retry_after_ms("Sun, 06 Nov 1994 08:49:37 GMT", 784111777 - 10), 10000);
  assert_int_equal(http_retry_after_ms("Sun, 06 Nov 1994 08:49:37 GMT trailing", 0), -1);
  assert_int_equal(http_retry_after_ms("soon", now), -1);
  assert_int_equal(http_retry_after_ms("", now), -1);
  assert_int_equal(http_retry_after_ms(NULL, now), -1);
  assert_int_equal(http_retry_after_ms("12abc", now), -1);
  assert_int_equal(http_retry_after_ms("-5", now), -1);
  /* Seconds beyond what milliseconds in an int64 hold saturate, never wrap. */
  const int64_t most = INT64_MAX / 1000 * 1000;
  assert_int_equal(http_retry_after_ms("99999999999999999999999999", now), most);
  assert_int_equal(http_retry_after_ms("9223372036854775", now), most);
  assert_int_equal(http_retry_after_ms("9223372036854776", now), most);
  assert_int_equal(http_retry_after_ms("9223372036854779", now), most);
  assert_int_equal(http_retry_after_ms("92233720368547790", now), most);
  assert_int_equal(http_retry_after_ms("922337203685477", now), 922337203685477000);
}

/* Keep-alive throughput: WSUP_HTTP_BENCH=N requests (default 2000), 100 in flight; prints client CPU per request. */
typedef struct bench { env *e; const char *url; int left, done, ok; } bench;

static const char bench_body[] = "{\"id\":12345,\"values\":[1,2,3,4,5,6,7,8,9,10],\"name\":\"uploader\"}";

static void bench_next(bench *b);
static void bench_done(void *ud, const http_res *r) {
  bench *b = ud;
  b->done++;
  b->ok += r->status == 200 && r->body_len == sizeof bench_body - 1 && !memcmp(r->body, bench_body, r->body_len);
  bench_next(b);
}
static void bench_next(bench *b) {
  static const char *const h[] = { "Content-Type: application/json" };
  if (b->left <= 0) return;
  b->left--;
  assert_non_null(http_start(b->e->c, &(http_req){ .method = "PUT", .url = b->url, .headers = h, .n_headers = 1,
                                                  .body = bench_body, .body_len = sizeof bench_body - 1, .timeout_ms = 10000 },
                             bench_done, b, NULL, 0));
}

static void test_bench_keepalive(void **state) {
  srv *s = *state;
  env e; env_init(&e);
  const char *n = getenv("WSUP_HTTP_BENCH");
  int total = n ? (int)strtol(n, NULL, 10) : 2000;
  if (total <= 0) total = 2000;
  bench b = { .e = &e, .url = url(&e, s, "/echo"), .left = 100 };
  for (int i = 0; i < 100; i++) bench_next(&b);   /* warm-up: open 100 connections */
  run(&e);
  b.left = total; b.done = b.ok = 0;
  struct rusage r0, r1;                           /* this (the loop's) thread only, not the server's */
  uint64_t t0 = uv_hrtime();
  getrusage(RUSAGE_THREAD, &r0);
  for (int i = 0; i < 100; i++) bench_next(&b);
  run(&e);
  getrusage(RUSAGE_THREAD, &r1);
  double wall = (double)(uv_hrtime() - t0) / 1e3;
#define US(a, b) ((double)((b).tv_sec - (a).tv_sec) * 1e6 + (double)((b).tv_usec - (a).tv_usec))
  double usr = US(r0.ru_utime, r1.ru_utime), sys = US(r0.ru_stime, r1.ru_stime);
  assert_int_equal(b.done, total);
  assert_int_equal(b.ok, total);
  print_message("bench: %d PUTs, 100 in flight: client thread CPU %.2f us/req (user %.2f, sys %.2f), wall %.2f us/req\n",
                total, (usr + sys) / total, usr / total, sys / total, wall / total);
  env_done(&e);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_echo_put),
    cmocka_unit_test(test_busy_retry_after),
    cmocka_unit_test(test_redirect_headers_reset),
    cmocka_unit_test(test_timeout),
    cmocka_unit_test(test_body_limit),
    cmocka_unit_test(test_body_truncated),
    cmocka_unit_test(test_refused),
    cmocka_unit_test(test_rejects_bad_request),
    cmocka_unit_test(test_reentrancy),
    cmocka_unit_test(test_concurrent_and_liveness),
    cmocka_unit_test(test_pooled_handle_no_leak),
    cmocka_unit_test(test_shards),
    cmocka_unit_test(test_shards_concurrent),
    cmocka_unit_test(test_fd_reuse),
    cmocka_unit_test(test_resolver_sockets),
    cmocka_unit_test(test_idle_peer_close),
    cmocka_unit_test(test_client_new_says_why_it_fails),
    cmocka_unit_test(test_header_is),
    cmocka_unit_test(test_retry_after_parse),
    cmocka_unit_test(test_bench_keepalive),
  };
  return cmocka_run_group_tests(tests, srv_setup, srv_teardown);
}
