/* test_uploader.c — the coalescing uploader's state machine on the virtual clock,
 * driven by a fake ops->send that records each body and completes only when the
 * test calls upl_done (or, in "auto" mode, from inside send). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evloop.h"
#include "pstore.h"
#include "ps_text.h"
#include "uploader.h"

/* ---- the fake sender --------------------------------------------------------- */

typedef struct fake {
  char *body[4096];  /* owned copies of each attempt's body */
  int64_t at[4096];  /* loop time of each attempt */
  int n;             /* attempts seen by send */
  int settled;       /* settled() calls */
  int record;        /* keep copies of bodies */
  int autodone;      /* complete inside send with auto_result */
  upl_result auto_result;
  int64_t auto_retry_after;
} fake;

static wl_loop L;
static upl U;
static fake F;

static void fake_send(upl *u) {
  fake *f = u->ud;
  assert_ptr_equal(f, &F);
  assert_non_null(u->body);
  assert_int_equal(strlen(u->body), u->body_len);
  assert_int_equal(u->phase, UPL_SENDING);
  if (f->record) {
    assert_true(f->n < (int)(sizeof f->body / sizeof f->body[0]));
    f->body[f->n] = strdup(u->body);
    f->at[f->n] = wl_now(u->loop);
  }
  f->n++;
  if (f->autodone) upl_done(u, f->auto_result, f->auto_retry_after, "auto");
}

static void fake_settled(upl *u) {
  fake *f = u->ud;
  f->settled++;
}

static const upl_ops OPS = {fake_send, fake_settled};

static void init_upl(ps_keys *keys) {
  upl_init(&U, &L, &OPS, &F, keys);
  U.base_ms = 100;
  U.max_ms = 1000;
  U.jitter_ms = 0;
}

static void start_all(uint64_t seed) {
  ps_keys k = {0};
  memset(&F, 0, sizeof F);
  F.record = 1;
  assert_int_equal(wl_init(&L), 0);
  assert_int_equal(wl_set_virtual(&L, 1), 0);
  wl_seed(&L, seed);
  assert_int_equal(ps_keys_default(&k), 0);
  init_upl(&k);
  assert_int_equal(k.n, 0); /* moved into U */
}

static void stop_all(void) {
  int i;
  upl_free(&U);
  wl_close(&L);
  for (i = 0; i < F.n && i < (int)(sizeof F.body / sizeof F.body[0]); i++) free(F.body[i]);
  memset(&F, 0, sizeof F);
}

static int setup(void **state) {
  (void)state;
  start_all(1);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  stop_all();
  return 0;
}

/* ---- helpers ----------------------------------------------------------------- */


static void enq(const char *text) { assert_int_equal(upl_enqueue(&U, ps_text(text)), 1); }

static void assert_json(const char *got, const char *want) {
  json_t *g, *w;
  assert_non_null(got);
  g = js(got);
  w = js(want);
  if (!json_equal(g, w)) fail_msg("got  %s\nwant %s", got, want);
  json_decref(g);
  json_decref(w);
}

static void assert_body(int i, const char *want) {
  if (i >= F.n) fail_msg("attempt %d never happened (%d attempts)", i + 1, F.n);
  assert_json(F.body[i], want);
}

static void assert_obj(const ps_obj *o, const char *want) {
  char *t = ps_encode(o, NULL);
  assert_json(t, want);
  free(t);
}

static int sends_reach(void *ud) { return F.n >= *(int *)ud; }

/* Runs the loop until the nth attempt has started; fails if the loop gives up. */
static void run_until_attempt(int n) {
  if (!wl_run(&L, -1, sends_reach, &n)) fail_msg("loop went idle with %d attempts, waiting for %d", F.n, n);
}

/* Runs the loop for ms of virtual time (or until it is idle). */
static void run_for(int64_t ms) { assert_int_equal(wl_run(&L, wl_now(&L) + ms, NULL, NULL), 0); }

/* ---- next turn and coalescing -------------------------------------------------- */

static void test_first_send_starts_on_next_turn_not_inside_enqueue(void **state) {
  (void)state;
  enq("{\"worker_status\":\"busy\"}");
  assert_int_equal(F.n, 0);
  assert_int_equal(U.phase, UPL_QUEUED);
  assert_int_equal(upl_next_attempt(&U), 0);
  assert_false(upl_idle(&U));
  assert_true(wl_busy(&L));
  run_until_attempt(1);
  assert_int_equal(F.at[0], 0);
  assert_int_equal(U.phase, UPL_SENDING);
  assert_int_equal(upl_next_attempt(&U), -1);
  assert_null(U.pending);
  assert_string_equal(F.body[0], "{\"worker_status\":\"busy\"}");
  run_for(10000); /* nothing completes by itself: still one attempt */
  assert_int_equal(F.n, 1);
}

static void test_burst_of_enqueues_coalesces_into_one_send(void **state) {
  char buf[128];
  int i;
  json_t *want = json_object(), *em = json_object(), *got;
  (void)state;
  for (i = 0; i < 100; i++) {
    snprintf(buf, sizeof buf, "{\"worker_status\":\"s%d\",\"external_metadata\":{\"k%d\":%d}}", i, i, i);
    enq(buf);
    snprintf(buf, sizeof buf, "k%d", i);
    json_object_set_new(em, buf, json_integer(i));
  }
  assert_int_equal(F.n, 0);
  json_object_set_new(want, "worker_status", json_string("s99"));
  json_object_set_new(want, "external_metadata", em);
  run_for(5000);
  assert_int_equal(F.n, 1);
  got = js(F.body[0]);
  if (!json_equal(got, want)) fail_msg("burst body: %s", F.body[0]);
  json_decref(got);
  json_decref(want);
  assert_int_equal(U.st.enqueued, 100);
  assert_int_equal(U.st.coalesced, 99);
  assert_int_equal(U.st.attempts, 1);
}

static void test_top_level_keys_last_value_wins(void **state) {
  (void)state;
  enq("{\"worker_status\":\"idle\",\"a\":1,\"b\":\"x\",\"c\":[1,2]}");
  enq("{\"a\":2,\"c\":[3]}");
  enq("{\"b\":null,\"worker_status\":\"busy\"}");
  enq("{\"a\":{\"deep\":true}}");
  run_until_attempt(1);
  assert_body(0, "{\"worker_status\":\"busy\",\"a\":{\"deep\":true},\"b\":null,\"c\":[3]}");
}

static void test_merge_keys_merge_one_level_and_keep_nulls(void **state) {
  (void)state;
  enq("{\"external_metadata\":{\"a\":1,\"b\":{\"x\":1},\"c\":\"keep\"},\"internal_metadata\":{\"i\":1}}");
  enq("{\"external_metadata\":{\"a\":null,\"b\":{\"y\":2},\"d\":null},\"internal_metadata\":{\"j\":2}}");
  run_until_attempt(1);
  /* b was replaced (one level), a and d are explicit nulls, c and i survive */
  assert_body(0,
              "{\"external_metadata\":{\"a\":null,\"b\":{\"y\":2},\"c\":\"keep\",\"d\":null},"
              "\"internal_metadata\":{\"i\":1,\"j\":2}}");
}

static void test_merge_key_with_non_object_value_is_replaced(void **state) {
  (void)state;
  enq("{\"external_metadata\":{\"a\":1}}");
  enq("{\"external_metadata\":null}");
  run_until_attempt(1);
  assert_body(0, "{\"external_metadata\":null}");
  upl_done(&U, UPL_OK, 0, NULL);
  enq("{\"external_metadata\":[1,2]}");
  enq("{\"external_metadata\":{\"z\":1}}"); /* an object over an array: replaces */
  run_until_attempt(2);
  assert_body(1, "{\"external_metadata\":{\"z\":1}}");
}

static void test_non_merge_nested_objects_are_replaced(void **state) {
  (void)state;
  enq("{\"other\":{\"a\":1,\"b\":2},\"external_metadata\":{\"keep\":1}}");
  enq("{\"other\":{\"c\":3}}");
  run_until_attempt(1);
  assert_body(0, "{\"other\":{\"c\":3},\"external_metadata\":{\"keep\":1}}");
}

static void test_custom_merge_keys_replace_the_defaults(void **state) {
  ps_keys k = {0};
  (void)state;
  upl_free(&U);
  assert_int_equal(ps_keys_add(&k, "cfg", 3), 0);
  init_upl(&k);
  enq("{\"cfg\":{\"a\":1},\"external_metadata\":{\"a\":1}}");
  enq("{\"cfg\":{\"b\":2},\"external_metadata\":{\"b\":2}}");
  run_until_attempt(1);
  assert_body(0, "{\"cfg\":{\"a\":1,\"b\":2},\"external_metadata\":{\"b\":2}}");
}

static void test_patch_built_with_ps_functions_is_sent_exactly(void **state) {
  ps_obj *p = ps_obj_new(4), *em = ps_obj_new(2);
  (void)state;
  assert_int_equal(ps_obj_set(em, "step", 4, ps_int(INT64_MAX)), 0);
  assert_int_equal(ps_obj_set(em, "note", 4, ps_null()), 0);
  assert_int_equal(ps_obj_set(p, "worker_status", 13, ps_str("busy", 4)), 0);
  assert_int_equal(ps_obj_set(p, "external_metadata", 17, ps_obj_val(em)), 0);
  assert_int_equal(ps_obj_set(p, "ok", 2, ps_bool(1)), 0);
  assert_int_equal(upl_enqueue(&U, p), 1); /* consumed */
  run_until_attempt(1);
  assert_string_equal(F.body[0],
                      "{\"worker_status\":\"busy\",\"external_metadata\":{\"step\":9223372036854775807,\"note\":null},"
                      "\"ok\":true}");
  assert_int_equal(U.body_len, strlen(F.body[0]));
  assert_int_equal(U.st.bytes_sent, strlen(F.body[0]));
}

/* ---- one in flight, one pending ----------------------------------------------- */

static void test_one_in_flight_and_one_pending(void **state) {
  (void)state;
  enq("{\"worker_status\":\"a\"}");
  run_until_attempt(1);
  enq("{\"worker_status\":\"b\",\"external_metadata\":{\"x\":1}}");
  enq("{\"external_metadata\":{\"y\":2}}");
  assert_non_null(U.pending);
  assert_int_equal(ps_obj_size(U.pending), 2);
  assert_int_equal(U.phase, UPL_SENDING);
  run_for(60000); /* a minute: no second request while one is in flight */
  assert_int_equal(F.n, 1);
  assert_string_equal(U.body, "{\"worker_status\":\"a\"}"); /* the in-flight body is untouched */
  assert_int_equal(U.st.enqueued, 3);
  assert_int_equal(U.st.coalesced, 1);
}

static void test_success_sends_pending_next_on_the_next_turn(void **state) {
  int64_t t;
  (void)state;
  enq("{\"worker_status\":\"a\",\"external_metadata\":{\"x\":1}}");
  run_until_attempt(1);
  run_for(250);
  enq("{\"external_metadata\":{\"y\":2}}");
  t = wl_now(&L);
  upl_done(&U, UPL_OK, 0, NULL);
  assert_int_equal(F.n, 1); /* not from inside upl_done */
  assert_int_equal(U.phase, UPL_QUEUED);
  assert_int_equal(F.settled, 0); /* pending remains: not settled */
  run_until_attempt(2);
  assert_int_equal(F.at[1], t);
  assert_body(1, "{\"external_metadata\":{\"y\":2}}"); /* only the pending patch, not the delivered one */
  upl_done(&U, UPL_OK, 0, NULL);
  assert_true(upl_idle(&U));
  assert_int_equal(F.settled, 1);
  assert_int_equal(U.st.delivered, 2);
  run_for(10000);
  assert_int_equal(F.n, 2);
}

static void test_send_may_complete_synchronously(void **state) {
  (void)state;
  F.autodone = 1;
  F.auto_result = UPL_OK;
  enq("{\"a\":1}");
  run_for(100);
  assert_int_equal(F.n, 1);
  assert_true(upl_idle(&U));
  assert_int_equal(U.st.delivered, 1);
  assert_int_equal(F.settled, 1);
}

/* ---- failures and backoff ------------------------------------------------------ */

static void test_backoff_schedule_base100_max1000_no_jitter(void **state) {
  static const int64_t want_at[6] = {0, 100, 300, 700, 1500, 2500};
  int i;
  (void)state;
  enq("{\"worker_status\":\"x\"}");
  for (i = 0; i < 6; i++) {
    run_until_attempt(i + 1);
    assert_int_equal(F.at[i], want_at[i]);
    assert_body(i, "{\"worker_status\":\"x\"}");
    assert_int_equal(U.st.consecutive_failures, (unsigned)i);
    if (i < 5) {
      upl_done(&U, UPL_RETRY, 0, "503");
      assert_int_equal(U.phase, UPL_BACKOFF);
      assert_int_equal(upl_next_attempt(&U), want_at[i + 1]);
      assert_true(wl_timer_active(&U.backoff));
      assert_string_equal(U.last_error, "503");
      assert_false(upl_idle(&U));
    }
  }
  upl_done(&U, UPL_OK, 0, NULL);
  assert_int_equal(F.n, 6);
  assert_true(upl_idle(&U));
  assert_int_equal(F.settled, 1);
  assert_int_equal(U.st.attempts, 6);
  assert_int_equal(U.st.failures, 5);
  assert_int_equal(U.st.delivered, 1);
  assert_int_equal(U.st.consecutive_failures, 0);
  assert_int_equal(upl_next_attempt(&U), -1);
  assert_int_equal(wl_run(&L, -1, NULL, NULL), 0); /* idle: nothing more */
  assert_int_equal(F.n, 6);
}

static void test_retry_forever_caps_at_max(void **state) {
  int i;
  (void)state;
  F.autodone = 1;
  F.auto_result = UPL_RETRY;
  enq("{\"a\":1}");
  run_until_attempt(40);
  for (i = 5; i < 40; i++) assert_int_equal(F.at[i] - F.at[i - 1], 1000);
  assert_int_equal(U.st.consecutive_failures, 40);
  assert_int_equal(U.st.delivered, 0);
}

/* Attempt times of a permanently failing uploader with jitter, for one seed. */
static void failing_times(uint64_t seed, int n, int64_t *out) {
  int i;
  stop_all();
  start_all(seed);
  U.jitter_ms = 50;
  F.autodone = 1;
  F.auto_result = UPL_RETRY;
  enq("{\"a\":1}");
  run_until_attempt(n);
  for (i = 0; i < n; i++) out[i] = F.at[i];
}

static void test_jitter_is_bounded_and_reproducible_with_seed(void **state) {
  enum { N = 40 };
  int64_t a[N], b[N], c[N];
  int i, jittered = 0, differ = 0;
  wl_loop ref;
  (void)state;
  failing_times(7, N, a);
  failing_times(7, N, b);
  failing_times(8, N, c);
  assert_memory_equal(a, b, sizeof a); /* same seed, same schedule */
  /* each wait is the capped exponential plus [0, 50), drawn from the seeded generator */
  assert_int_equal(wl_init(&ref), 0);
  wl_seed(&ref, 7);
  for (i = 1; i < N; i++) {
    int64_t exp = 100LL << (i - 1 < 4 ? i - 1 : 4), gap = a[i] - a[i - 1];
    if (exp > 1000) exp = 1000;
    if (gap < exp || gap >= exp + 50) fail_msg("wait %d is %lld, want [%lld, %lld)", i, (long long)gap, (long long)exp, (long long)exp + 50);
    assert_int_equal(gap, upl_delay(&U, (unsigned)i, wl_random(&ref)));
    jittered += gap != exp;
    differ += (a[i] - a[i - 1]) != (c[i] - c[i - 1]);
  }
  wl_close(&ref);
  assert_true(jittered > N / 2); /* jitter is really there */
  assert_true(differ > N / 2);   /* another seed gives another schedule */
}

static void test_retry_after_lengthens_the_wait_but_never_shortens_it(void **state) {
  (void)state;
  enq("{\"a\":1}");
  run_until_attempt(1);
  upl_done(&U, UPL_RETRY, 5000, "429");
  assert_int_equal(upl_next_attempt(&U), 5000);
  run_for(4999);
  assert_int_equal(F.n, 1);
  run_until_attempt(2);
  assert_int_equal(F.at[1], 5000);
  upl_done(&U, UPL_RETRY, 50, "429"); /* shorter than the 200 ms backoff: ignored */
  assert_int_equal(upl_next_attempt(&U), 5200);
  run_until_attempt(3);
  assert_int_equal(F.at[2], 5200);
}

static void test_pending_is_absorbed_into_the_retried_payload(void **state) {
  (void)state;
  enq("{\"worker_status\":\"a\",\"external_metadata\":{\"x\":1,\"y\":1}}");
  run_until_attempt(1);
  enq("{\"external_metadata\":{\"y\":null,\"z\":2}}"); /* while in flight */
  upl_done(&U, UPL_RETRY, 0, NULL);
  assert_non_null(U.pending); /* absorbed at retry time, not at failure time */
  run_for(50);
  enq("{\"worker_status\":\"b\"}"); /* while backing off */
  run_until_attempt(2);
  assert_null(U.pending);
  assert_body(1, "{\"worker_status\":\"b\",\"external_metadata\":{\"x\":1,\"y\":null,\"z\":2}}");
  assert_obj(U.payload, "{\"worker_status\":\"b\",\"external_metadata\":{\"x\":1,\"y\":null,\"z\":2}}");
  assert_int_equal(U.st.absorbed, 1);
  assert_int_equal(U.st.coalesced, 1);
  upl_done(&U, UPL_RETRY, 0, NULL);
  run_until_attempt(3); /* nothing pending: the retry absorbs nothing */
  assert_int_equal(U.st.absorbed, 1);
  assert_string_equal(F.body[2], F.body[1]);
}

static void test_drop_counts_dropped_and_sends_pending_next(void **state) {
  (void)state;
  enq("{\"worker_status\":\"a\"}");
  run_until_attempt(1);
  upl_done(&U, UPL_RETRY, 0, NULL);
  run_until_attempt(2);
  enq("{\"worker_status\":\"b\"}");
  upl_done(&U, UPL_DROP, 0, NULL);
  assert_int_equal(U.st.dropped, 1);
  assert_int_equal(U.st.consecutive_failures, 0);
  assert_int_equal(U.st.failures, 1);
  assert_string_equal(U.last_error, "dropped by send");
  assert_int_equal(U.phase, UPL_QUEUED);
  assert_false(wl_timer_active(&U.backoff));
  run_until_attempt(3);
  assert_int_equal(F.at[2], F.at[1]); /* next turn, no backoff */
  assert_body(2, "{\"worker_status\":\"b\"}"); /* the dropped payload is gone */
  upl_done(&U, UPL_DROP, 0, "too large");
  assert_string_equal(U.last_error, "too large");
  assert_true(upl_idle(&U));
  assert_int_equal(U.st.dropped, 2);
  assert_int_equal(F.settled, 1);
}

static void test_last_error_is_none_until_a_failure_and_kept_to_one_line(void **state) {
  char longer[400];
  (void)state;
  assert_null(U.last_error);
  enq("{\"worker_status\":\"a\"}");
  run_until_attempt(1);
  memset(longer, 'x', sizeof longer - 1);
  longer[sizeof longer - 1] = '\0';
  upl_done(&U, UPL_RETRY, 0, longer);
  assert_int_equal(strlen(U.last_error), 255);
  run_until_attempt(2);
  upl_done(&U, UPL_OK, 0, NULL);
  assert_int_equal(strlen(U.last_error), 255); /* the last error stays after a success */
  /* cut before a character that would straddle byte 255, never inside it */
  enq("{\"worker_status\":\"b\"}");
  run_until_attempt(3);
  memset(longer, 'x', 254);
  memcpy(longer + 254, "\xc3\xa9", 2); /* e-acute at bytes 254-255 */
  longer[256] = '\0';
  upl_done(&U, UPL_RETRY, 0, longer);
  assert_int_equal(strlen(U.last_error), 254);
}

static void test_default_merge_keys_are_shared_and_custom_ones_owned(void **state) {
  upl v;
  ps_keys k = {0};
  (void)state;
  upl_init(&v, &L, &OPS, &F, NULL);
  assert_ptr_equal(v.keys, ps_keys_defaults());
  assert_null(v.own_keys);
  assert_true(ps_is_merge_key(v.keys, "internal_metadata", 17));
  upl_free(&v);
  assert_int_equal(ps_keys_add(&k, "cfg", 3), 0);
  upl_init(&v, &L, &OPS, &F, &k);
  assert_int_equal(k.n, 0); /* moved */
  assert_ptr_equal(v.keys, v.own_keys);
  assert_true(ps_is_merge_key(v.keys, "cfg", 3));
  assert_false(ps_is_merge_key(v.keys, "external_metadata", 17));
  upl_free(&v); /* frees the keys: ASan and valgrind would see a leak */
}

static void test_release_frees_pending_payload_and_error_without_the_loop(void **state) {
  upl v;
  ps_keys k = {0};
  (void)state;
  assert_int_equal(ps_keys_add(&k, "cfg", 3), 0);
  upl_init(&v, &L, &OPS, &F, &k);
  assert_int_equal(ps_obj_set(upl_pending_obj(&v), "a", 1, ps_str("a string longer than inline", 27)), 0);
  upl_commit(&v, 0); /* queues the start job on L */
  wl_cancel(&L, &v.start); /* as if the loop had gone: release must not need it */
  v.phase = UPL_IDLE;
  v.payload = ps_obj_new(2);
  v.last_error = strdup("boom");
  upl_release(&v); /* ASan and valgrind check that nothing is left */
  assert_null(v.pending);
  assert_null(v.payload);
  assert_null(v.own_keys);
  assert_null(v.last_error);
}

/* ---- close --------------------------------------------------------------------- */

static void test_close_during_backoff_stops_retries_and_drops_pending(void **state) {
  uint64_t attempts;
  (void)state;
  enq("{\"worker_status\":\"a\"}");
  run_until_attempt(1);
  upl_done(&U, UPL_RETRY, 0, NULL);
  enq("{\"worker_status\":\"b\"}");
  upl_close(&U);
  assert_true(U.closed);
  assert_true(U.lost);
  assert_null(U.pending);
  assert_null(U.payload);
  assert_null(U.body);
  assert_false(wl_timer_active(&U.backoff));
  assert_int_equal(U.phase, UPL_IDLE);
  assert_int_equal(upl_next_attempt(&U), -1);
  assert_true(upl_idle(&U));
  assert_int_equal(F.settled, 1);
  assert_false(wl_busy(&L));
  attempts = U.st.attempts;
  assert_int_equal(wl_run(&L, -1, NULL, NULL), 0);
  assert_int_equal(F.n, 1);
  assert_int_equal(U.st.attempts, attempts);
  upl_done(&U, UPL_RETRY, 0, NULL); /* a stray completion changes nothing */
  assert_int_equal(U.st.failures, 1);
  upl_close(&U); /* idempotent */
  assert_int_equal(F.settled, 1);
}

static void test_close_during_backoff_with_nothing_pending_still_marks_lost(void **state) {
  (void)state;
  enq("{\"worker_status\":\"a\"}");
  run_until_attempt(1);
  upl_done(&U, UPL_RETRY, 0, NULL);
  assert_null(U.pending);
  upl_close(&U);
  assert_true(U.lost); /* the failed payload was never delivered */
  assert_null(U.payload);
  assert_int_equal(wl_run(&L, -1, NULL, NULL), 0);
  assert_int_equal(F.n, 1);
}

static void test_close_during_send_lets_done_finish_without_retry(void **state) {
  (void)state;
  enq("{\"worker_status\":\"a\"}");
  run_until_attempt(1);
  enq("{\"worker_status\":\"b\"}");
  upl_close(&U);
  assert_true(U.lost); /* pending was dropped */
  assert_null(U.pending);
  assert_int_equal(U.phase, UPL_SENDING);
  assert_string_equal(U.body, "{\"worker_status\":\"a\"}"); /* the sender may still read it */
  assert_false(upl_idle(&U));
  upl_done(&U, UPL_RETRY, 0, "503");
  assert_int_equal(U.st.failures, 1);
  assert_false(wl_timer_active(&U.backoff));
  assert_int_equal(U.phase, UPL_IDLE);
  assert_int_equal(upl_next_attempt(&U), -1);
  assert_null(U.payload);
  assert_true(upl_idle(&U));
  assert_int_equal(wl_run(&L, -1, NULL, NULL), 0);
  assert_int_equal(F.n, 1);
}

static void test_close_during_send_then_success_is_delivered_and_not_lost(void **state) {
  (void)state;
  enq("{\"worker_status\":\"a\"}");
  run_until_attempt(1);
  upl_close(&U);
  assert_false(U.lost); /* nothing was dropped yet */
  upl_done(&U, UPL_OK, 0, NULL);
  assert_false(U.lost);
  assert_int_equal(U.st.delivered, 1);
  assert_true(upl_idle(&U));
}

static void test_close_during_send_then_failure_marks_lost(void **state) {
  (void)state;
  enq("{\"worker_status\":\"a\"}");
  run_until_attempt(1);
  upl_close(&U);
  assert_false(U.lost);
  upl_done(&U, UPL_RETRY, 0, NULL);
  assert_true(U.lost);
  assert_int_equal(wl_run(&L, -1, NULL, NULL), 0);
  assert_int_equal(F.n, 1);
}

static void test_close_before_the_first_send_sends_nothing(void **state) {
  (void)state;
  enq("{\"worker_status\":\"a\"}");
  upl_close(&U);
  assert_true(U.lost);
  assert_null(L.head); /* the start job was cancelled */
  assert_int_equal(F.settled, 1);
  assert_int_equal(wl_run(&L, -1, NULL, NULL), 0);
  assert_int_equal(F.n, 0);
  assert_int_equal(U.st.attempts, 0);
}

static void test_enqueue_after_close_returns_0_and_changes_nothing(void **state) {
  (void)state;
  upl_close(&U);
  assert_false(U.lost); /* nothing was pending */
  assert_int_equal(upl_enqueue(&U, ps_text("{\"a\":1}")), 0); /* the patch is freed (valgrind) */
  assert_null(upl_pending_obj(&U));
  assert_null(U.pending);
  assert_int_equal(U.st.enqueued, 0);
  assert_false(wl_busy(&L));
  assert_int_equal(wl_run(&L, -1, NULL, NULL), 0);
  assert_int_equal(F.n, 0);
}

/* ---- stats ---------------------------------------------------------------------- */

static void test_stats_count_every_event(void **state) {
  uint64_t bytes = 0;
  int i;
  (void)state;
  enq("{\"a\":1}");
  enq("{\"b\":2}"); /* coalesced 1 */
  run_until_attempt(1);
  enq("{\"c\":3}");
  enq("{\"d\":4}"); /* coalesced 2 */
  upl_done(&U, UPL_RETRY, 0, NULL); /* failures 1 */
  assert_int_equal(U.st.consecutive_failures, 1);
  enq("{\"e\":5}"); /* coalesced 3 */
  run_until_attempt(2); /* absorbed 1 */
  assert_body(1, "{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5}");
  upl_done(&U, UPL_DROP, 0, NULL); /* dropped 1 */
  enq("{\"f\":6}");
  run_until_attempt(3);
  upl_done(&U, UPL_RETRY, 0, NULL); /* failures 2 */
  run_until_attempt(4);
  upl_done(&U, UPL_OK, 0, NULL); /* delivered 1 */
  for (i = 0; i < F.n; i++) bytes += strlen(F.body[i]);
  assert_int_equal(U.st.enqueued, 6);
  assert_int_equal(U.st.coalesced, 3);
  assert_int_equal(U.st.absorbed, 1);
  assert_int_equal(U.st.attempts, 4);
  assert_int_equal(U.st.delivered, 1);
  assert_int_equal(U.st.failures, 2);
  assert_int_equal(U.st.dropped, 1);
  assert_int_equal(U.st.consecutive_failures, 0);
  assert_int_equal(U.st.bytes_sent, bytes);
}

/* ---- upl_delay ------------------------------------------------------------------ */

static void test_delay_doubles_then_caps_at_max(void **state) {
  static const int64_t want[8] = {100, 100, 200, 400, 800, 1000, 1000, 1000};
  unsigned n;
  (void)state;
  for (n = 0; n < 8; n++) assert_int_equal(upl_delay(&U, n, 0.0), want[n]);
  U.jitter_ms = 500;
  assert_int_equal(upl_delay(&U, 3, 0.0), 400);
  assert_int_equal(upl_delay(&U, 3, 0.5), 650);
  assert_int_equal(upl_delay(&U, 3, 0.999999), 899); /* jitter stays below jitter_ms */
  U.base_ms = 5000; /* base above max: max wins */
  assert_int_equal(upl_delay(&U, 1, 0.0), 1000);
}

static void test_delay_handles_huge_failure_counts_without_overflow(void **state) {
  static const unsigned counts[] = {31, 32, 33, 63, 64, 65, 66, 1000, 10000, 1u << 31, UINT_MAX};
  size_t i;
  (void)state;
  for (i = 0; i < sizeof counts / sizeof counts[0]; i++) {
    assert_int_equal(upl_delay(&U, counts[i], 0.0), 1000);
    assert_int_equal(upl_delay(&U, counts[i], 0.999), 1000);
  }
  /* the largest values the Lua binding accepts (1e15 ms) */
  U.base_ms = 1;
  U.max_ms = 1000000000000000LL;
  U.jitter_ms = 1000000000000000LL;
  assert_int_equal(upl_delay(&U, 10000, 0.0), 1000000000000000LL);
  assert_int_equal(upl_delay(&U, 40, 0.0), 1LL << 39);
  assert_true(upl_delay(&U, UINT_MAX, 0.999999) < 2000000000000000LL);
  U.base_ms = 1000000000000000LL;
  assert_int_equal(upl_delay(&U, 10000, 0.0), 1000000000000000LL);
  /* beyond what Lua passes (the C API takes any int64): saturates instead of overflowing */
  U.base_ms = 1000;
  U.max_ms = INT64_MAX;
  U.jitter_ms = INT64_MAX / 2;
  assert_int_equal(upl_delay(&U, 64, 0.0), INT64_MAX);
  U.max_ms = INT64_MAX / 4 * 3;
  assert_int_equal(upl_delay(&U, 64, 0.999), INT64_MAX);
}

static void test_ten_thousand_failures_in_a_row_still_wait_max(void **state) {
  (void)state;
  enq("{\"a\":1}");
  run_until_attempt(1);
  U.st.consecutive_failures = 9999;
  upl_done(&U, UPL_RETRY, 0, NULL);
  assert_int_equal(U.st.consecutive_failures, 10000);
  assert_int_equal(upl_next_attempt(&U), 1000);
  run_until_attempt(2);
  assert_int_equal(F.at[1], 1000);
}

/* ---- bounded memory --------------------------------------------------------------- */

static void test_million_enqueues_during_outage_keep_one_bounded_pending(void **state) {
  const int N = 1000000;
  struct mallinfo2 before, after;
  int i, fresh = 0;
  size_t max_em = 0;
  (void)state;
  F.record = 0;
  F.autodone = 1;
  F.auto_result = UPL_RETRY; /* the server is down for good */
  U.base_ms = 10;
  U.max_ms = 50;
  before = mallinfo2();
  for (i = 0; i < N; i++) {
    ps_obj *p = ps_obj_new(3), *em = ps_obj_new(1), *im = ps_obj_new(1);
    char key[8];
    int kn = snprintf(key, sizeof key, "k%d", i % 10);
    assert_int_equal(ps_obj_set(em, key, (size_t)kn, ps_int(i)), 0);
    assert_int_equal(ps_obj_set(im, "seq", 3, ps_int(i)), 0);
    assert_int_equal(ps_obj_set(p, "worker_status", 13, ps_str(i % 2 ? "busy" : "idle", 4)), 0);
    assert_int_equal(ps_obj_set(p, "external_metadata", 17, ps_obj_val(em)), 0);
    assert_int_equal(ps_obj_set(p, "internal_metadata", 17, ps_obj_val(im)), 0);
    fresh += U.pending == NULL;
    assert_int_equal(upl_enqueue(&U, p), 1);
    if (ps_obj_size(U.pending) != 3) fail_msg("enqueue %d: pending has %zu keys, want 3", i, ps_obj_size(U.pending));
    {
      const ps_val *v = ps_obj_get(U.pending, "external_metadata", 17);
      size_t s = ps_obj_size(ps_obj_of(v));
      if (s > max_em) max_em = s;
    }
    if (U.payload && ps_obj_size(U.payload) != 3) fail_msg("enqueue %d: payload has %zu keys", i, ps_obj_size(U.payload));
    if (i % 1000 == 999) run_for(20); /* retries come and go, absorbing pending */
  }
  after = mallinfo2();
  assert_int_equal(max_em, 10); /* the merge key holds at most the 10 distinct keys */
  assert_int_equal(U.st.enqueued, (uint64_t)N);
  assert_int_equal(U.st.delivered, 0);
  assert_true(U.st.attempts > 100);
  assert_true(U.st.absorbed > 100 && U.st.absorbed < U.st.attempts);
  assert_int_equal(U.st.failures, U.st.attempts);
  assert_int_equal(U.st.coalesced, (uint64_t)(N - fresh)); /* every enqueue into an existing pending counts */
  assert_true(fresh <= (int)U.st.absorbed + 2);
  /* malloc statistics (zero under valgrind, which replaces malloc): heap did not grow */
  if (before.uordblks && after.uordblks > before.uordblks + (1u << 20))
    fail_msg("heap grew from %zu to %zu bytes", before.uordblks, after.uordblks);
  /* the latest values are what the next retry sends */
  run_for(100);
  assert_obj(U.payload,
             "{\"worker_status\":\"busy\",\"external_metadata\":{\"k0\":999990,\"k1\":999991,\"k2\":999992,"
             "\"k3\":999993,\"k4\":999994,\"k5\":999995,\"k6\":999996,\"k7\":999997,\"k8\":999998,\"k9\":999999},"
             "\"internal_metadata\":{\"seq\":999999}}");
  upl_close(&U);
  assert_true(U.lost);
}

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
  const struct CMUnitTest tests[] = {
      T(test_first_send_starts_on_next_turn_not_inside_enqueue),
      T(test_burst_of_enqueues_coalesces_into_one_send),
      T(test_top_level_keys_last_value_wins),
      T(test_merge_keys_merge_one_level_and_keep_nulls),
      T(test_merge_key_with_non_object_value_is_replaced),
      T(test_non_merge_nested_objects_are_replaced),
      T(test_custom_merge_keys_replace_the_defaults),
      T(test_patch_built_with_ps_functions_is_sent_exactly),
      T(test_one_in_flight_and_one_pending),
      T(test_success_sends_pending_next_on_the_next_turn),
      T(test_send_may_complete_synchronously),
      T(test_backoff_schedule_base100_max1000_no_jitter),
      T(test_retry_forever_caps_at_max),
      T(test_jitter_is_bounded_and_reproducible_with_seed),
      T(test_retry_after_lengthens_the_wait_but_never_shortens_it),
      T(test_pending_is_absorbed_into_the_retried_payload),
      T(test_drop_counts_dropped_and_sends_pending_next),
      T(test_last_error_is_none_until_a_failure_and_kept_to_one_line),
      T(test_default_merge_keys_are_shared_and_custom_ones_owned),
      T(test_release_frees_pending_payload_and_error_without_the_loop),
      T(test_close_during_backoff_stops_retries_and_drops_pending),
      T(test_close_during_backoff_with_nothing_pending_still_marks_lost),
      T(test_close_during_send_lets_done_finish_without_retry),
      T(test_close_during_send_then_success_is_delivered_and_not_lost),
      T(test_close_during_send_then_failure_marks_lost),
      T(test_close_before_the_first_send_sends_nothing),
      T(test_enqueue_after_close_returns_0_and_changes_nothing),
      T(test_stats_count_every_event),
      T(test_delay_doubles_then_caps_at_max),
      T(test_delay_handles_huge_failure_counts_without_overflow),
      T(test_ten_thousand_failures_in_a_row_still_wait_max),
      T(test_million_enqueues_during_outage_keep_one_bounded_pending),
  };
#undef T
  return cmocka_run_group_tests(tests, NULL, NULL);
}
