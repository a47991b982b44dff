/* test_receiver.c — rcv_fold unit tests and end-to-end tests over libcurl on 127.0.0.1. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include "receiver.h"

static const char *const keys[] = {"external_metadata", "internal_metadata"};

/* ---- helpers ---------------------------------------------------------------- */

static json_t *js(const char *text) {
  json_error_t e;
  json_t *v = json_loads(text, 0, &e);
  if (!v) fail_msg("bad test JSON %s: %s", text, e.text);
  return v;
}

/* Compares by canonical text so a failure shows both sides. */
static void assert_json(const json_t *got, const char *want) {
  json_t *w = js(want);
  char *g = got ? json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS) : strdup("(null)");
  char *ws = json_dumps(w, JSON_COMPACT | JSON_SORT_KEYS);
  assert_string_equal(g, ws);
  free(g);
  free(ws);
  json_decref(w);
}

static void fold_case(const char *state, const char *patch, const char *want) {
  json_t *s = js(state), *p = js(patch);
  assert_int_equal(rcv_fold(s, p, keys, 2), 0);
  assert_json(s, want);
  json_decref(s);
  json_decref(p);
}

struct reply {
  long status;
  char body[4096];
  size_t len;
  char retry[64], allow[64], ctype[64];
  long ms;
  long connects;
  CURLcode rc;
};

static long now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static size_t on_body(char *p, size_t sz, size_t n, void *ud) {
  struct reply *rep = ud;
  size_t k = sz * n, room = sizeof rep->body - 1 - rep->len;
  if (k < room) room = k;
  memcpy(rep->body + rep->len, p, room);
  rep->len += room;
  rep->body[rep->len] = '\0';
  return k;
}

static void header(CURL *c, const char *name, char *dst, size_t cap) {
  struct curl_header *h;
  dst[0] = '\0';
  if (curl_easy_header(c, name, 0, CURLH_HEADER, -1, &h) == CURLHE_OK)
    snprintf(dst, cap, "%s", h->value);
}

/* One request on handle c (reused for keep-alive); body NULL sends none. */
static void http_on(CURL *c, int port, const char *method, const char *path,
                    const char *body, size_t len, struct reply *rep) {
  char url[256];
  long t0;
  memset(rep, 0, sizeof *rep);
  snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
  curl_easy_setopt(c, CURLOPT_URL, url);
  if (body) {
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
  } else if (strcmp(method, "GET") == 0) {
    curl_easy_setopt(c, CURLOPT_HTTPGET, 1L); /* undo an earlier body on this handle */
  }
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, rep);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 20L);
  t0 = now_ms();
  rep->rc = curl_easy_perform(c);
  rep->ms = now_ms() - t0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &rep->status);
  curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &rep->connects);
  header(c, "Retry-After", rep->retry, sizeof rep->retry);
  header(c, "Allow", rep->allow, sizeof rep->allow);
  header(c, "Content-Type", rep->ctype, sizeof rep->ctype);
}

static void http(rcv *r, const char *method, const char *path, const char *body,
                 struct reply *rep) {
  CURL *c = curl_easy_init();
  assert_non_null(c);
  http_on(c, rcv_port(r), method, path, body, body ? strlen(body) : 0, rep);
  curl_easy_cleanup(c);
  assert_int_equal(rep->rc, CURLE_OK);
}

/* Checks status and, when want is non-NULL, the body as JSON. */
static void expect(rcv *r, const char *method, const char *path, const char *body,
                   long status, const char *want) {
  struct reply rep;
  http(r, method, path, body, &rep);
  assert_int_equal(rep.status, status);
  assert_string_equal(rep.ctype, "application/json");
  if (want) {
    json_t *got = js(rep.body);
    assert_json(got, want);
    json_decref(got);
  }
}

/* The error message of a {"error":"..."} reply, copied into buf. */
static const char *error_of(const struct reply *rep, char *buf, size_t cap) {
  json_t *v = js(rep->body);
  const char *e = json_string_value(json_object_get(v, "error"));
  assert_non_null(e);
  snprintf(buf, cap, "%s", e);
  json_decref(v);
  return buf;
}

static int setup(void **st) {
  char err[256] = "";
  rcv_opts o = {.host = "127.0.0.1", .max_body = 256};
  rcv *r = rcv_start(&o, err, sizeof err);
  if (!r) fail_msg("rcv_start: %s", err);
  assert_true(rcv_port(r) > 0);
  *st = r;
  return 0;
}

static int teardown(void **st) {
  rcv_stop(*st);
  return 0;
}

/* ---- rcv_fold ------------------------------------------------------------------ */

static void fold_replaces_top_level(void **st) {
  (void)st;
  fold_case("{\"a\":1,\"b\":{\"x\":1}}", "{\"b\":2,\"c\":\"s\"}", "{\"a\":1,\"b\":2,\"c\":\"s\"}");
  fold_case("{\"a\":{\"x\":1,\"y\":2}}", "{\"a\":{\"x\":3}}", "{\"a\":{\"x\":3}}");
  fold_case("{\"a\":1}", "{\"a\":null}", "{\"a\":null}");
  fold_case("{}", "{}", "{}");
}

static void fold_merges_one_level(void **st) {
  (void)st;
  fold_case("{\"external_metadata\":{\"a\":1,\"b\":2}}",
            "{\"external_metadata\":{\"b\":3,\"c\":4}}",
            "{\"external_metadata\":{\"a\":1,\"b\":3,\"c\":4}}");
  /* Only one level: a nested object is replaced, not merged. */
  fold_case("{\"internal_metadata\":{\"a\":{\"p\":1,\"q\":2}}}",
            "{\"internal_metadata\":{\"a\":{\"p\":9}}}",
            "{\"internal_metadata\":{\"a\":{\"p\":9}}}");
}

static void fold_null_deletes(void **st) {
  (void)st;
  fold_case("{\"external_metadata\":{\"a\":1,\"b\":2}}",
            "{\"external_metadata\":{\"a\":null,\"zz\":null}}",
            "{\"external_metadata\":{\"b\":2}}");
  /* Absent or non-object stored value: the new object minus its nulls. */
  fold_case("{}", "{\"external_metadata\":{\"a\":null,\"b\":1}}",
            "{\"external_metadata\":{\"b\":1}}");
  fold_case("{\"internal_metadata\":\"str\"}", "{\"internal_metadata\":{\"x\":null}}",
            "{\"internal_metadata\":{}}");
}

static void fold_non_object_replaces(void **st) {
  (void)st;
  fold_case("{\"external_metadata\":{\"a\":1}}", "{\"external_metadata\":null}",
            "{\"external_metadata\":null}");
  fold_case("{\"external_metadata\":{\"a\":1}}", "{\"external_metadata\":[1,2]}",
            "{\"external_metadata\":[1,2]}");
  fold_case("{\"internal_metadata\":{\"a\":1}}", "{\"internal_metadata\":5}",
            "{\"internal_metadata\":5}");
}

static void fold_custom_keys_and_copies(void **st) {
  const char *const mine[] = {"m"};
  json_t *s = js("{\"m\":{\"a\":1},\"external_metadata\":{\"a\":1}}");
  json_t *p = js("{\"m\":{\"b\":{\"deep\":1}},\"external_metadata\":{\"b\":2}}");
  (void)st;
  assert_int_equal(rcv_fold(s, p, mine, 1), 0);
  assert_json(s, "{\"m\":{\"a\":1,\"b\":{\"deep\":1}},\"external_metadata\":{\"b\":2}}");
  /* The state holds copies: changing the patch afterwards must not leak in. */
  json_object_set_new(json_object_get(json_object_get(p, "m"), "b"), "deep", json_integer(7));
  json_object_set_new(json_object_get(p, "external_metadata"), "c", json_true());
  assert_json(s, "{\"m\":{\"a\":1,\"b\":{\"deep\":1}},\"external_metadata\":{\"b\":2}}");
  json_decref(s);
  json_decref(p);
}

static void fold_rejects_non_objects(void **st) {
  json_t *s = js("{}"), *arr = js("[1]"), *one = json_integer(1);
  (void)st;
  assert_int_equal(rcv_fold(s, arr, keys, 2), -1);
  assert_int_equal(rcv_fold(arr, s, keys, 2), -1);
  assert_int_equal(rcv_fold(s, one, keys, 2), -1);
  assert_int_equal(rcv_fold(NULL, s, keys, 2), -1);
  json_decref(s);
  json_decref(arr);
  json_decref(one);
}

/* ---- end to end ----------------------------------------------------------------- */

static void put_returns_new_state(void **st) {
  rcv *r = *st;
  json_t *s;
  expect(r, "PUT", "/worker", "{\"a\":1,\"external_metadata\":{\"x\":1}}", 200,
         "{\"a\":1,\"external_metadata\":{\"x\":1}}");
  expect(r, "PUT", "/worker", "{\"b\":true,\"external_metadata\":{\"x\":null,\"y\":2}}", 200,
         "{\"a\":1,\"b\":true,\"external_metadata\":{\"y\":2}}");
  expect(r, "PUT", "/worker/7?q=1", "{\"z\":\"seven\"}", 200, "{\"z\":\"seven\"}");
  expect(r, "GET", "/worker/7", NULL, 200, "{\"z\":\"seven\"}");
  expect(r, "GET", "/worker", NULL, 200, "{\"a\":1,\"b\":true,\"external_metadata\":{\"y\":2}}");
  expect(r, "GET", "/worker/never", NULL, 200, "{}");
  s = rcv_state(r, "/worker");
  assert_json(s, "{\"a\":1,\"b\":true,\"external_metadata\":{\"y\":2}}");
  json_decref(s);
  assert_null(rcv_state(r, "/worker/never"));
}

static void big_integers_stay_exact(void **st) {
  rcv *r = *st;
  const char *body = "{\"max\":9223372036854775807,\"min\":-9223372036854775808,"
                     "\"b\":123456789012345678,\"f\":0.30000000000000004}";
  struct reply rep;
  json_t *s;
  http(r, "PUT", "/worker", body, &rep);
  assert_int_equal(rep.status, 200);
  assert_non_null(strstr(rep.body, "\"max\":9223372036854775807"));
  assert_non_null(strstr(rep.body, "\"min\":-9223372036854775808"));
  assert_non_null(strstr(rep.body, "\"b\":123456789012345678"));
  http(r, "GET", "/worker", NULL, &rep);
  assert_non_null(strstr(rep.body, "\"b\":123456789012345678,"));
  s = js(rep.body);
  assert_true(json_real_value(json_object_get(s, "f")) == 0.1 + 0.2); /* needs all 17 digits */
  json_decref(s);
  s = rcv_state(r, "/worker");
  assert_true(json_is_integer(json_object_get(s, "max")));
  assert_true(json_integer_value(json_object_get(s, "max")) == INT64_MAX);
  assert_true(json_integer_value(json_object_get(s, "min")) == INT64_MIN);
  assert_true(json_integer_value(json_object_get(s, "b")) == 123456789012345678LL);
  json_decref(s);
}

static void malformed_json_is_400_and_serving_goes_on(void **st) {
  rcv *r = *st;
  struct reply rep;
  char e[256];
  http(r, "PUT", "/worker", "{\"a\":1,", &rep);
  assert_int_equal(rep.status, 400);
  assert_non_null(strstr(error_of(&rep, e, sizeof e), "line 1, column 7"));
  http(r, "PUT", "/worker", "{\"a\":\"\xff\"}", &rep); /* invalid UTF-8 */
  assert_int_equal(rep.status, 400);
  http(r, "PUT", "/worker", "", &rep);
  assert_int_equal(rep.status, 400);
  assert_null(rcv_state(r, "/worker"));
  expect(r, "PUT", "/worker", "{\"ok\":1}", 200, "{\"ok\":1}");
}

static void non_object_is_400(void **st) {
  rcv *r = *st;
  struct reply rep;
  char e[256];
  http(r, "PUT", "/worker", "[1,2]", &rep);
  assert_int_equal(rep.status, 400);
  assert_string_equal(error_of(&rep, e, sizeof e), "body is not a JSON object");
  http(r, "PUT", "/worker/x", "null", &rep);
  assert_int_equal(rep.status, 400);
  assert_string_equal(error_of(&rep, e, sizeof e), "body is not a JSON object");
  assert_null(rcv_state(r, "/worker/x"));
}

static void unknown_path_is_404_other_method_405(void **st) {
  rcv *r = *st;
  struct reply rep;
  char e[256];
  http(r, "GET", "/other", NULL, &rep);
  assert_int_equal(rep.status, 404);
  assert_true(strlen(error_of(&rep, e, sizeof e)) > 0);
  http(r, "PUT", "/workers", "{}", &rep); /* a prefix of the name is not a path under it */
  assert_int_equal(rep.status, 404);
  assert_null(rcv_state(r, "/workers"));
  http(r, "DELETE", "/worker", NULL, &rep);
  assert_int_equal(rep.status, 405);
  assert_string_equal(rep.allow, "GET, PUT");
  http(r, "POST", "/worker/1", "{\"a\":1}", &rep);
  assert_int_equal(rep.status, 405);
  assert_string_equal(rep.allow, "GET, PUT");
  assert_null(rcv_state(r, "/worker/1"));
}

static size_t read_chunk(char *buf, size_t sz, size_t n, void *ud) {
  size_t *left = ud, k = sz * n < *left ? sz * n : *left;
  memset(buf, ' ', k); /* whitespace only: it would parse were it small */
  *left -= k;
  return k;
}

static void oversize_is_413(void **st) {
  rcv *r = *st;
  struct reply rep;
  char body[400];
  size_t left = 300;
  CURL *c;
  struct curl_slist *h = curl_slist_append(NULL, "Transfer-Encoding: chunked");
  /* Exactly max_body (256) is fine; one byte more is not. */
  memset(body, ' ', sizeof body);
  memcpy(body, "{\"a\":1}", 7);
  body[256] = '\0';
  expect(r, "PUT", "/worker", body, 200, "{\"a\":1}");
  body[256] = ' ';
  body[257] = '\0';
  memcpy(body, "{\"a\":2}", 7);
  http(r, "PUT", "/worker", body, &rep);
  assert_int_equal(rep.status, 413);
  /* Chunked, so no Content-Length: counted while receiving. */
  c = curl_easy_init();
  curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
  curl_easy_setopt(c, CURLOPT_READFUNCTION, read_chunk);
  curl_easy_setopt(c, CURLOPT_READDATA, &left);
  http_on(c, rcv_port(r), "PUT", "/worker", NULL, 0, &rep);
  assert_int_equal(rep.rc, CURLE_OK);
  assert_int_equal(rep.status, 413);
  assert_int_equal(left, 0);
  curl_easy_cleanup(c);
  curl_slist_free_all(h);
  /* Refused at the headers, the reply still waits out the delay. */
  rcv_delay(r, 100);
  http(r, "PUT", "/worker", body, &rep);
  assert_int_equal(rep.status, 413);
  assert_true(rep.ms >= 100);
  expect(r, "GET", "/worker", NULL, 200, "{\"a\":1}");
}

static void oversize_default_limit(void **st) {
  size_t n = 2 * 1024 * 1024;
  char *big = malloc(n + 1), err[256];
  rcv *r = rcv_start(NULL, err, sizeof err);
  struct reply rep;
  CURL *c = curl_easy_init();
  struct curl_slist *h = curl_slist_append(NULL, "Expect:");
  (void)st;
  assert_non_null(r);
  memset(big, ' ', n);
  big[0] = '{';
  big[n - 1] = '}';
  big[n] = '\0';
  http(r, "PUT", "/worker", big, &rep); /* curl asks "Expect: 100-continue" */
  assert_int_equal(rep.status, 413);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, h); /* and now without asking */
  http_on(c, rcv_port(r), "PUT", "/worker", big, n, &rep);
  assert_int_equal(rep.rc, CURLE_OK);
  assert_int_equal(rep.status, 413);
  big[1024 * 1024 - 1] = '}';
  http_on(c, rcv_port(r), "PUT", "/worker", big, 1024 * 1024, &rep);
  assert_int_equal(rep.status, 200);
  curl_easy_cleanup(c);
  curl_slist_free_all(h);
  free(big);
  rcv_stop(r);
}

static void injected_failure_then_recovery(void **st) {
  rcv *r = *st;
  struct reply rep;
  rcv_fail(r, 2, 503, "1");
  http(r, "PUT", "/worker", "{\"a\":1}", &rep);
  assert_int_equal(rep.status, 503);
  assert_string_equal(rep.retry, "1");
  http(r, "GET", "/worker", NULL, &rep); /* GETs are not failed */
  assert_int_equal(rep.status, 200);
  http(r, "PUT", "/worker", "{\"b\":1}", &rep);
  assert_int_equal(rep.status, 503);
  assert_null(rcv_state(r, "/worker")); /* failed PUTs are not applied */
  expect(r, "PUT", "/worker", "{\"c\":1}", 200, "{\"c\":1}");
  rcv_fail(r, 1, 429, "Wed, 21 Oct 2015 07:28:00 GMT");
  http(r, "PUT", "/worker", "{\"d\":1}", &rep);
  assert_int_equal(rep.status, 429);
  assert_string_equal(rep.retry, "Wed, 21 Oct 2015 07:28:00 GMT");
  rcv_fail(r, 1, 500, NULL);
  http(r, "PUT", "/worker", "{\"d\":1}", &rep);
  assert_int_equal(rep.status, 500);
  assert_string_equal(rep.retry, "");
  rcv_fail(r, 5, 503, NULL);
  rcv_fail(r, 0, 503, NULL); /* disarms */
  expect(r, "PUT", "/worker", "{\"e\":1}", 200, "{\"c\":1,\"e\":1}");
}

struct job {
  rcv *r;
  struct reply rep;
};

static void *get_job(void *arg) {
  struct job *j = arg;
  CURL *c = curl_easy_init();
  http_on(c, rcv_port(j->r), "GET", "/worker", NULL, 0, &j->rep);
  curl_easy_cleanup(c);
  return NULL;
}

static void delay_holds_responses_without_blocking(void **st) {
  rcv *r = *st;
  struct reply rep;
  struct job jobs[8];
  pthread_t t[8];
  long t0, wall;
  CURL *c = curl_easy_init();
  rcv_delay(r, 200);
  http(r, "PUT", "/worker", "{\"a\":1}", &rep);
  assert_int_equal(rep.status, 200);
  assert_true(rep.ms >= 200);
  /* Eight at once take about one delay; served one by one they would take eight. */
  rcv_delay(r, 500);
  t0 = now_ms();
  for (int i = 0; i < 8; i++) {
    jobs[i].r = r;
    assert_int_equal(pthread_create(&t[i], NULL, get_job, &jobs[i]), 0);
  }
  for (int i = 0; i < 8; i++) pthread_join(t[i], NULL);
  wall = now_ms() - t0;
  for (int i = 0; i < 8; i++) {
    assert_int_equal(jobs[i].rep.rc, CURLE_OK);
    assert_int_equal(jobs[i].rep.status, 200);
    assert_true(jobs[i].rep.ms >= 500);
  }
  print_message("8 concurrent GETs delayed by 500 ms took %ld ms\n", wall);
  assert_true(wall < 1500); /* generous for valgrind; serialized would be >= 4000 */
  /* Keep-alive survives a suspended response. */
  http_on(c, rcv_port(r), "GET", "/worker", NULL, 0, &rep);
  http_on(c, rcv_port(r), "GET", "/worker", NULL, 0, &rep);
  assert_int_equal(rep.status, 200);
  assert_int_equal(rep.connects, 0);
  rcv_delay(r, 0);
  http_on(c, rcv_port(r), "GET", "/worker", NULL, 0, &rep);
  assert_true(rep.ms < 150);
  curl_easy_cleanup(c);
}

static void keep_alive_reuses_connection(void **st) {
  rcv *r = *st;
  struct reply rep;
  CURL *c = curl_easy_init();
  http_on(c, rcv_port(r), "PUT", "/worker", "{\"a\":1}", 7, &rep);
  assert_int_equal(rep.connects, 1);
  http_on(c, rcv_port(r), "PUT", "/worker", "{\"a\":2}", 7, &rep);
  assert_int_equal(rep.status, 200);
  assert_int_equal(rep.connects, 0);
  http_on(c, rcv_port(r), "PUT", "/worker", "[", 1, &rep); /* errors keep it too */
  http_on(c, rcv_port(r), "GET", "/worker", NULL, 0, &rep);
  assert_int_equal(rep.status, 200);
  assert_int_equal(rep.connects, 0);
  curl_easy_cleanup(c);
}

static void stats_count_by_status(void **st) {
  rcv *r = *st;
  struct reply rep;
  int statuses[8];
  unsigned long counts[8];
  assert_int_equal(rcv_stats(r, statuses, counts, 8), 0);
  http(r, "PUT", "/worker", "{}", &rep);
  http(r, "GET", "/worker", NULL, &rep);
  http(r, "PUT", "/worker", "x", &rep);
  http(r, "GET", "/nope", NULL, &rep);
  rcv_fail(r, 3, 503, "1");
  for (int i = 0; i < 3; i++) http(r, "PUT", "/worker", "{}", &rep);
  assert_int_equal(rcv_requests(r), 7);
  assert_int_equal(rcv_stats(r, statuses, counts, 8), 4);
  assert_int_equal(statuses[0], 200);
  assert_int_equal(counts[0], 2);
  assert_int_equal(statuses[1], 400);
  assert_int_equal(counts[1], 1);
  assert_int_equal(statuses[2], 404);
  assert_int_equal(counts[2], 1);
  assert_int_equal(statuses[3], 503);
  assert_int_equal(counts[3], 3);
  statuses[1] = -1;
  assert_int_equal(rcv_stats(r, statuses, counts, 1), 4); /* fills only max */
  assert_int_equal(statuses[1], -1);
  rcv_totals t;
  size_t n = rcv_snapshot(r, &t, statuses, counts, 8);
  unsigned long sum = t.dropped;
  for (size_t i = 0; i < n; i++) sum += counts[i];
  assert_int_equal(t.requests, 7);
  assert_int_equal(sum, t.requests);                 /* one snapshot: the parts add up */
}

struct log {
  pthread_mutex_t mu;
  int calls, status;
  char method[16], path[64], state[256];
};

static void on_request(void *ud, const char *method, const char *path, int status,
                       const json_t *state) {
  struct log *l = ud;
  char *s = state ? json_dumps(state, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
  pthread_mutex_lock(&l->mu);
  l->calls++;
  l->status = status;
  snprintf(l->method, sizeof l->method, "%s", method);
  snprintf(l->path, sizeof l->path, "%s", path);
  snprintf(l->state, sizeof l->state, "%s", s ? s : "NULL");
  pthread_mutex_unlock(&l->mu);
  free(s);
}

static void hook_sees_each_request(void **st) {
  rcv *r = *st;
  struct reply rep;
  struct log l = {.mu = PTHREAD_MUTEX_INITIALIZER};
  rcv_on_request(r, on_request, &l);
  http(r, "PUT", "/worker/h", "{\"a\":1}", &rep);
  pthread_mutex_lock(&l.mu);
  assert_int_equal(l.calls, 1);
  assert_int_equal(l.status, 200);
  assert_string_equal(l.method, "PUT");
  assert_string_equal(l.path, "/worker/h");
  assert_string_equal(l.state, "{\"a\":1}");
  pthread_mutex_unlock(&l.mu);
  http(r, "PATCH", "/worker/h", NULL, &rep);
  pthread_mutex_lock(&l.mu);
  assert_int_equal(l.calls, 2);
  assert_int_equal(l.status, 405);
  assert_string_equal(l.method, "PATCH");
  assert_string_equal(l.state, "NULL");
  pthread_mutex_unlock(&l.mu);
  rcv_on_request(r, NULL, NULL);
  http(r, "GET", "/worker/h", NULL, &rep);
  assert_int_equal(l.calls, 2);
}

static void start_errors(void **st) {
  rcv *r = *st, *r2;
  char err[256] = "";
  rcv_opts o = {.host = "127.0.0.1", .port = rcv_port(r)};
  r2 = rcv_start(&o, err, sizeof err);
  assert_null(r2);
  print_message("port in use: %s\n", err);
  assert_non_null(strstr(err, "in use"));
  o.host = "not-an-address";
  err[0] = '\0';
  assert_null(rcv_start(&o, err, sizeof err));
  assert_true(strlen(err) > 0);
  o.host = "127.0.0.1";
  o.port = 70000;
  assert_null(rcv_start(&o, NULL, 0));
}

static void *slow_get(void *arg) {
  struct job *j = arg;
  CURL *c = curl_easy_init();
  http_on(c, rcv_port(j->r), "GET", "/worker", NULL, 0, &j->rep);
  curl_easy_cleanup(c);
  return NULL;
}

static void stop_with_parked_request(void **st) {
  struct job j = {0};
  pthread_t t;
  long t0;
  void *p;
  (void)st;
  assert_int_equal(setup(&p), 0);
  j.r = p;
  rcv_delay(j.r, 10000);
  assert_int_equal(pthread_create(&t, NULL, slow_get, &j), 0);
  while (rcv_requests(j.r) == 0) nanosleep(&(struct timespec){0, 1000000}, NULL);
  t0 = now_ms();
  rcv_stop(j.r);
  pthread_join(t, NULL);
  assert_true(now_ms() - t0 < 2000);
}

/* A client that sends its request and then half-closes (shutdown(SHUT_WR), as
 * `nc -N` does) must get its answer and see the server close: found by the receiver
 * fuzzer, where the epoll backend of libmicrohttpd 0.9.75 missed the FIN and held the
 * connection until its 300 s timeout. */
static void half_close_is_answered_and_closed(void **st) {
  rcv *r = *st;
  static const char req[] = "GET /worker HTTP/1.1\r\nHost: x\r\n\r\n";
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)rcv_port(r))};
  char buf[4096];
  size_t got = 0;
  int fd = socket(AF_INET, SOCK_STREAM, 0), eof = 0;
  assert_true(fd >= 0);
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  assert_int_equal(write(fd, req, sizeof req - 1), (ssize_t)(sizeof req - 1));
  shutdown(fd, SHUT_WR);
  for (int i = 0; i < 40 && !eof; i++) { /* up to 2 s */
    struct pollfd p = {.fd = fd, .events = POLLIN};
    ssize_t n;
    if (poll(&p, 1, 50) <= 0) continue;
    n = read(fd, buf + got, sizeof buf - 1 - got);
    if (n <= 0) eof = 1;
    else got += (size_t)n;
  }
  close(fd);
  buf[got] = '\0';
  assert_true(strncmp(buf, "HTTP/1.1 200", 12) == 0);
  assert_true(eof);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(fold_replaces_top_level),
      cmocka_unit_test(fold_merges_one_level),
      cmocka_unit_test(fold_null_deletes),
      cmocka_unit_test(fold_non_object_replaces),
      cmocka_unit_test(fold_custom_keys_and_copies),
      cmocka_unit_test(fold_rejects_non_objects),
      cmocka_unit_test_setup_teardown(put_returns_new_state, setup, teardown),
      cmocka_unit_test_setup_teardown(big_integers_stay_exact, setup, teardown),
      cmocka_unit_test_setup_teardown(malformed_json_is_400_and_serving_goes_on, setup, teardown),
      cmocka_unit_test_setup_teardown(non_object_is_400, setup, teardown),
      cmocka_unit_test_setup_teardown(unknown_path_is_404_other_method_405, setup, teardown),
      cmocka_unit_test_setup_teardown(oversize_is_413, setup, teardown),
      cmocka_unit_test(oversize_default_limit),
      cmocka_unit_test_setup_teardown(injected_failure_then_recovery, setup, teardown),
      cmocka_unit_test_setup_teardown(delay_holds_responses_without_blocking, setup, teardown),
      cmocka_unit_test_setup_teardown(keep_alive_reuses_connection, setup, teardown),
      cmocka_unit_test_setup_teardown(stats_count_by_status, setup, teardown),
      cmocka_unit_test_setup_teardown(hook_sees_each_request, setup, teardown),
      cmocka_unit_test_setup_teardown(start_errors, setup, teardown),
      cmocka_unit_test(stop_with_parked_request),
      cmocka_unit_test_setup_teardown(half_close_is_answered_and_closed, setup, teardown),
  };
  int rc;
  curl_global_init(CURL_GLOBAL_DEFAULT);
  rc = cmocka_run_group_tests(tests, NULL, NULL);
  curl_global_cleanup();
  return rc;
}
