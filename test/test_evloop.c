/* test_evloop.c — the event loop: timer heap order and removal, next-turn jobs,
 * wl_run's return values, the virtual clock, wl_random, one short real-clock test,
 * and wl_close. Everything runs on the virtual clock unless it is about real time. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "evloop.h"

/* ---- helpers ---------------------------------------------------------------- */

typedef struct rec {
  int id[8192];
  int64_t at[8192];
  int turn[8192];
  int n;
} rec;

static wl_loop L;
static rec R;
static int turns; /* done() calls: wl_run calls done exactly once per turn */

static void note(int id) {
  assert_true(R.n < (int)(sizeof R.id / sizeof R.id[0]));
  R.id[R.n] = id;
  R.at[R.n] = wl_now(&L);
  R.turn[R.n] = turns;
  R.n++;
}

/* Callbacks receive an int id smuggled in ud. */
#define ID(i) ((void *)(intptr_t)(i))
static void note_cb(void *ud) { note((int)(intptr_t)ud); }

static int count_turn(void *ud) {
  (void)ud;
  turns++;
  return 0;
}

static int setup_virtual(void **state) {
  (void)state;
  memset(&R, 0, sizeof R);
  turns = 0;
  assert_int_equal(wl_init(&L), 0);
  assert_int_equal(wl_set_virtual(&L, 1), 0);
  wl_seed(&L, 1);
  return 0;
}

static int setup_real(void **state) {
  (void)state;
  memset(&R, 0, sizeof R);
  turns = 0;
  assert_int_equal(wl_init(&L), 0);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  wl_close(&L);
  return 0;
}

static void assert_ids(const int *want, int n) {
  int i;
  if (R.n != n) fail_msg("fired %d callbacks, want %d", R.n, n);
  for (i = 0; i < n; i++)
    if (R.id[i] != want[i]) fail_msg("callback #%d was id %d, want %d", i, R.id[i], want[i]);
}

/* Heap invariants: every slot points back, parents come before children. */
static int before(const wl_timer *a, const wl_timer *b) {
  return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void check_heap(void) {
  size_t i;
  assert_true(L.n <= L.cap);
  for (i = 0; i < L.n; i++) {
    assert_int_equal(L.heap[i]->slot, i + 1);
    if (i > 0 && before(L.heap[i], L.heap[(i - 1) / 2]))
      fail_msg("heap order broken at %zu: due %lld before parent due %lld", i, (long long)L.heap[i]->due,
               (long long)L.heap[(i - 1) / 2]->due);
  }
}

/* ---- timers: order ---------------------------------------------------------- */

static void test_timers_fire_in_deadline_order(void **state) {
  wl_timer t[6] = {{0}};
  static const int64_t delay[6] = {30, 10, 50, 0, 20, 40};
  static const int want[6] = {3, 1, 4, 0, 5, 2};
  static const int64_t want_at[6] = {0, 10, 20, 30, 40, 50};
  int i;
  (void)state;
  for (i = 0; i < 6; i++) wl_timer_start(&L, &t[i], delay[i], note_cb, ID(i));
  check_heap();
  assert_int_equal(wl_run(&L, -1, NULL, NULL), 0);
  assert_ids(want, 6);
  for (i = 0; i < 6; i++) assert_int_equal(R.at[i], want_at[i]);
  for (i = 0; i < 6; i++) assert_false(wl_timer_active(&t[i]));
}

static void test_equal_deadlines_fire_in_start_order(void **state) {
  wl_timer t[40] = {{0}};
  int want[40], i;
  (void)state;
  for (i = 0; i < 40; i++) {
    wl_timer_start(&L, &t[i], 7, note_cb, ID(i));
    want[i] = i;
  }
  assert_int_equal(wl_run(&L, -1, NULL, NULL), 0);
  assert_ids(want, 40);
  for (i = 0; i < 40; i++) assert_int_equal(R.at[i], 7);
}

static void test_restarting_a_timer_moves_it_behind_equal_deadlines(void **state) {
  wl_timer t[3] = {{0}};
  static const int want[3] = {1, 2, 0};
  int i;
  (void)state;
  for (i = 0; i < 3; i++) wl_timer_start(&L, &t[i], 5, note_cb, ID(i));
  wl_timer_start(&L, &t[0], 5, note_cb, ID(0)); /* restart: same deadline, later start */
  assert_int_equal(L.n, 3);                     /* restarted in place, not added twice */
  check_heap();
  assert_int_equal(wl_run(&L, -1, NULL, NULL), 0);
  assert_ids(want, 3);
}

static void test_negative_delay_fires_now(void **state) {
  wl_timer t = {0};
  (void)state;
  assert_int_equal(wl_run(&L, 100, NULL, NULL), 0); /* idle: returns at once, time does not move */
  wl_timer_start(&L, &t, 50, note_cb, ID(9));
  assert_int_equal(wl_run(&L, 20, NULL, NULL), 0);
  assert_int_equal(wl_now(&L), 20);
  wl_timer_start(&L, &t, -100, note_cb, ID(1));
  assert_int_equal(t.due, 20);
  assert_int_equal(wl_run(&L, -1, NULL, NULL), 0);
  assert_int_equal(R.n, 1);
  assert_int_equal(R.at[0], 20);
}

/* ---- timers: stop ----------------------------------------------------------- */

static void test_stop_removes_heap_last_element(void **state) {
  wl_timer t[15] = {{0}};
  int want[14], i;
  (void)state;
  for (i = 0; i < 15; i++) wl_timer_start(&L, &t[i], 10 * i, note_cb, ID(i)); /* increasing: heap == start order */
  assert_int_equal(t[14].slot, 15);
  assert_int_equal(L.n, 15);
  wl_timer_stop(&L, &t[14]);
  assert_false(wl_timer_active(&t[14]));
  assert_int_equal(L.n, 14);
  check_heap();
  wl_timer_stop(&L, &t[14]); /* stopping again is a no-op */
  assert_int_equal(L.n, 14);
  for (i = 0; i < 14; i++) want[i] = i;
  assert_int_equal(wl_run(&L, -1, NULL, NULL), 0);
  assert_ids(want, 14);
}

/* The last element moved into the hole is smaller than the hole's parent: it must
 * sift up. Heap (by due): [0, 100, 10, 110, 120, 20, 30]; stop 110 (index 3). */
static void test_stop_middle_element_sifts_replacement_up(void **state) {
  wl_timer t[7] = {{0}};
  static const int64_t due[7] = {0, 100, 10, 110, 120, 20, 30};
  static const int want[6] = {0, 2, 5, 6, 1, 4};
  int i;
  (void)state;
  for (i = 0; i < 7; i++) wl_timer_start(&L, &t[i], due[i], note_cb, ID(i));
  for (i = 0; i < 7; i++) assert_int_equal(t[i].slot, i + 1); /* the layout the test relies on */
  wl_timer_stop(&L, &t[3]);
  assert_false(wl_timer_active(&t[3]));
  check_heap();
  assert_int_equal(t[6].slot, 2); /* 30 moved into slot 4, then up above 100 */
  assert_int_equal(wl_run(&L, -1, NULL, NULL), 0);
  assert_ids(want, 6);
}

/* The last element moved into the hole is larger than the hole's children: it must
 * sift down. Heap (by due): [0, 10, 100, 20, 30, 110, 120]; stop 10 (index 1). */
static void test_stop_middle_element_sifts_replacement_down(void **state) {
  wl_timer t[7] = {{0}};
  static const int64_t due[7] = {0, 10, 100, 20, 30, 110, 120};
  static const int want[6] = {0, 3, 4, 2, 5, 6};
  int i;
  (void)state;
  for (i = 0; i < 7; i++) wl_timer_start(&L, &t[i], due[i], note_cb, ID(i));
  for (i = 0; i < 7; i++) assert_int_equal(t[i].slot, i + 1);
  wl_timer_stop(&L, &t[1]);
  check_heap();
  assert_int_equal(wl_run(&L, -1, NULL, NULL), 0);
  assert_ids(want, 6);
}

static void test_stop_root_and_only_element(void **state) {
  wl_timer a = {0}, b = {0};
  static const int want[1] = {2};
  (void)state;
  wl_timer_stop(&L, &a); /* never started: no-op */
  wl_timer_start(&L, &a, 5, note_cb, ID(1));
  wl_timer_stop(&L, &a); /* the only element */
  assert_int_equal(L.n, 0);
  assert_false(wl_busy(&L));
  wl_timer_start(&L, &a, 5, note_cb, ID(1));
  wl_timer_start(&L, &b, 6, note_cb, ID(2));
  wl_timer_stop(&L, &a); /* the root */
  check_heap();
  assert_int_equal(wl_run(&L, -1, NULL, NULL), 0);
  assert_ids(want, 1);
  assert_int_equal(R.at[0], 6);
}

static void stop_other_cb(void *ud) {
  wl_timer *other = ud;
  note(-1);
  wl_timer_stop(&L, other);
}

static void test_timer_stopped_by_an_earlier_callback_in_the_same_turn_does_not_fire(void **state) {
  wl_timer a = {0}, b = {0};
  (void)state;
  wl_timer_start(&L, &a, 10, stop_other_cb, &b);
  wl_timer_start(&L, &b, 10, note_cb, ID(2)); /* same deadline, after a */
  assert_int_equal(wl_run(&L, -1, NULL, NULL), 0);
  assert_int_equal(R.n, 1);
  assert_int_equal(R.id[0], -1);
}

/* A few thousand random starts, restarts, stops and bounded runs, checked against a
 * model: an array of (active, due, seq); a run to deadline D fires, in (due, seq)
 * order, exactly the active timers due before D. */
#define NT 64
typedef struct model {
  int active;
  int64_t due;
  uint64_t seq;
} model;

static uint64_t rng_state;
static uint32_t rnd(uint32_t n) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (uint32_t)(rng_state % n);
}

static void test_random_start_stop_matches_reference_model(void **state) {
  static wl_timer t[NT];
  model m[NT];
  uint64_t mseq = 0;
  int op, i, fired_total = 0, stops = 0, restarts = 0, stops_root = 0, stops_last = 0, stops_middle = 0;
  (void)state;
  memset(t, 0, sizeof t);
  memset(m, 0, sizeof m);
  rng_state = 0x9e3779b97f4a7c15u;
  for (op = 0; op < 6000; op++) {
    uint32_t kind = rnd(100);
    int64_t now = wl_now(&L);
    if (kind < 45) { /* start or restart */
      int k = (int)rnd(NT);
      int64_t d = (int64_t)rnd(400) - 5; /* a few negative delays: due now */
      if (m[k].active) restarts++;
      wl_timer_start(&L, &t[k], d, note_cb, ID(k));
      m[k].active = 1;
      m[k].due = now + (d > 0 ? d : 0);
      m[k].seq = mseq++;
    } else if (kind < 88) { /* stop: mostly an active timer, sometimes any */
      int k = (int)rnd(NT), tries = 0;
      while (!m[k].active && rnd(10) < 8 && tries++ < 4 * NT) k = (int)rnd(NT);
      if (m[k].active) {
        stops++;
        if (t[k].slot == 1) stops_root++;
        else if (t[k].slot == L.n) stops_last++;
        else stops_middle++;
      }
      wl_timer_stop(&L, &t[k]);
      m[k].active = 0;
    } else { /* run to a deadline */
      int64_t deadline = now + (int64_t)rnd(60);
      int want[NT], nw = 0, remaining = 0, j;
      int64_t want_now = now;
      for (;;) { /* selection of the next (due, seq) among due-before-deadline, not yet chosen */
        int best = -1;
        for (j = 0; j < NT; j++) {
          int taken = 0, q;
          if (!m[j].active || m[j].due >= deadline) continue;
          for (q = 0; q < nw; q++) taken |= want[q] == j;
          if (taken) continue;
          if (best < 0 || m[j].due < m[best].due || (m[j].due == m[best].due && m[j].seq < m[best].seq)) best = j;
        }
        if (best < 0) break;
        want[nw++] = best;
      }
      for (j = 0; j < nw; j++) {
        m[want[j]].active = 0;
        if (m[want[j]].due > want_now) want_now = m[want[j]].due;
      }
      for (j = 0; j < NT; j++) remaining += m[j].active;
      if (remaining && deadline > want_now) want_now = deadline; /* jumps to the run deadline */
      R.n = 0;
      assert_int_equal(wl_run(&L, deadline, NULL, NULL), 0);
      if (R.n != nw) fail_msg("op %d: run to %lld fired %d timers, model says %d", op, (long long)deadline, R.n, nw);
      for (j = 0; j < nw; j++) {
        if (R.id[j] != want[j]) fail_msg("op %d: firing #%d was timer %d, model says %d", op, j, R.id[j], want[j]);
        assert_int_equal(R.at[j], m[want[j]].due > now ? m[want[j]].due : now);
      }
      assert_int_equal(wl_now(&L), want_now);
      fired_total += nw;
    }
    check_heap();
    for (i = 0; i < NT; i++)
      if (wl_timer_active(&t[i]) != m[i].active) fail_msg("op %d: timer %d active=%d, model %d", op, i, wl_timer_active(&t[i]), m[i].active);
    {
      size_t n = 0;
      for (i = 0; i < NT; i++) n += (size_t)m[i].active;
      assert_int_equal(L.n, n);
    }
  }
  /* The random walk really exercised what it claims to. */
  if (fired_total < 500 || stops < 500 || restarts < 200 || stops_root < 20 || stops_last < 20 || stops_middle < 300)
    fail_msg("weak walk: fired %d, stops %d (root %d, last %d, middle %d), restarts %d", fired_total, stops,
             stops_root, stops_last, stops_middle, restarts);
  for (i = 0; i < NT; i++) wl_timer_stop(&L, &t[i]);
}

/* ---- timers: no starvation -------------------------------------------------- */

static wl_timer again;
static wl_job again_job;
static void job_note_cb(void *ud) { note((int)(intptr_t)ud); }

static void again_cb(void *ud) {
  (void)ud;
  note(1);
  if (R.n < 20) {
    wl_timer_start(&L, &again, 0, again_cb, NULL);
    wl_defer(&L, &again_job, job_note_cb, ID(2));
  }
}

static int twenty(void *ud) {
  (void)ud;
  turns++;
  return R.n >= 20;
}

static void test_zero_delay_timer_started_in_callback_fires_on_a_later_turn(void **state) {
  int i;
  (void)state;
  wl_timer_start(&L, &again, 0, again_cb, NULL);
  assert_int_equal(wl_run(&L, -1, twenty, NULL), 1);
  assert_int_equal(wl_now(&L), 0); /* virtual time never moved: always something runnable */
  /* Timer and the job it defers alternate. The job runs on a turn after the firing that
   * queued it, and each firing on a turn after the one that restarted the timer (a turn may
   * run a job and then fire a timer that was due before it began). */
  for (i = 0; i < R.n; i++) assert_int_equal(R.id[i], i % 2 == 0 ? 1 : 2);
  for (i = 1; i < R.n; i++)
    if (R.turn[i] <= R.turn[i - (R.id[i] == 2 ? 1 : 2)])
      fail_msg("callback %d ran in the turn (%d) of the one that started it", i, R.turn[i]);
  wl_timer_stop(&L, &again);
  wl_cancel(&L, &again_job);
}

static wl_timer self_t, other_t;
static int self_count;
static void self_restart_cb(void *ud) {
  (void)ud;
  if (++self_count < 1000) wl_timer_start(&L, &self_t, 0, self_restart_cb, NULL); /* bounded if it ever starved */
}
static void other_stops_cb(void *ud) {
  (void)ud;
  note(7);
  wl_timer_stop(&L, &self_t);
}

static void test_self_restarting_zero_delay_timer_does_not_starve_a_due_timer(void **state) {
  (void)state;
  self_count = 0;
  wl_timer_start(&L, &self_t, 0, self_restart_cb, NULL);
  wl_timer_start(&L, &other_t, 0, other_stops_cb, NULL);
  assert_int_equal(wl_run(&L, -1, NULL, NULL), 0);
  assert_int_equal(R.n, 1);
  assert_int_equal(self_count, 1); /* the restarted timer waited for the next turn; other ran first */
}

/* ---- jobs ------------------------------------------------------------------- */

static void test_jobs_run_fifo_on_the_next_turn(void **state) {
  wl_job j[5] = {{0}};
  static const int want[5] = {0, 1, 2, 3, 4};
  int i;
  (void)state;
  for (i = 0; i < 5; i++) wl_defer(&L, &j[i], note_cb, ID(i));
  assert_int_equal(R.n, 0); /* nothing runs inside wl_defer */
  assert_true(wl_busy(&L));
  assert_int_equal(wl_run(&L, -1, count_turn, NULL), 0);
  assert_ids(want, 5);
  for (i = 0; i < 5; i++) {
    assert_int_equal(R.turn[i], 1); /* all in the first turn */
    assert_false(j[i].queued);
  }
  assert_false(wl_busy(&L));
}

static void test_job_queued_twice_runs_once_with_its_first_callback(void **state) {
  wl_job a = {0}, b = {0};
  static const int want[2] = {1, 2};
  (void)state;
  wl_defer(&L, &a, note_cb, ID(1));
  wl_defer(&L, &b, note_cb, ID(2));
  wl_defer(&L, &a, note_cb, ID(99)); /* already queued: no-op, keeps its place */
  assert_int_equal(wl_run(&L, -1, NULL, NULL), 0);
  assert_ids(want, 2);
  wl_defer(&L, &a, note_cb, ID(3)); /* after running it may be queued again */
  assert_int_equal(wl_run(&L, -1, NULL, NULL), 0);
  assert_int_equal(R.n, 3);
  assert_int_equal(R.id[2], 3);
}

static wl_job chain[3];
static void chain_cb(void *ud) {
  int i = (int)(intptr_t)ud;
  note(i);
  if (i < 2) wl_defer(&L, &chain[i + 1], chain_cb, ID(i + 1));
}

static void test_job_deferred_by_a_job_runs_on_a_later_turn(void **state) {
  static const int want[3] = {0, 1, 2};
  (void)state;
  memset(chain, 0, sizeof chain);
  wl_defer(&L, &chain[0], chain_cb, ID(0));
  assert_int_equal(wl_run(&L, -1, count_turn, NULL), 0);
  assert_ids(want, 3);
  assert_int_equal(R.turn[0], 1);
  assert_int_equal(R.turn[1], 2);
  assert_int_equal(R.turn[2], 3);
}

static void test_jobs_run_before_due_timers(void **state) {
  wl_timer t = {0};
  wl_job j = {0};
  static const int want[2] = {2, 1};
  (void)state;
  wl_timer_start(&L, &t, 0, note_cb, ID(1));
  wl_defer(&L, &j, note_cb, ID(2));
  assert_int_equal(wl_run(&L, -1, NULL, NULL), 0);
  assert_ids(want, 2);
}

static void test_cancel_head_middle_and_tail(void **state) {
  wl_job j[6] = {{0}};
  static const int want[3] = {1, 3, 5};
  int i;
  (void)state;
  for (i = 0; i < 5; i++) wl_defer(&L, &j[i], note_cb, ID(i));
  wl_cancel(&L, &j[0]); /* head */
  wl_cancel(&L, &j[2]); /* middle */
  wl_cancel(&L, &j[4]); /* tail */
  assert_false(j[0].queued);
  assert_false(j[4].queued);
  assert_ptr_equal(L.tail, &j[3]);
  wl_cancel(&L, &j[4]); /* not queued: no-op */
  wl_defer(&L, &j[5], note_cb, ID(5)); /* appended after the new tail */
  assert_int_equal(wl_run(&L, -1, NULL, NULL), 0);
  assert_ids(want, 3);
}

static void test_cancel_the_only_job_leaves_the_loop_idle(void **state) {
  wl_job a = {0}, b = {0};
  (void)state;
  wl_defer(&L, &a, note_cb, ID(1));
  wl_cancel(&L, &a);
  assert_null(L.head);
  assert_null(L.tail);
  assert_false(wl_busy(&L));
  assert_int_equal(wl_set_virtual(&L, 1), 0);
  wl_defer(&L, &b, note_cb, ID(2)); /* the queue still works after emptying by cancel */
  wl_defer(&L, &a, note_cb, ID(1));
  assert_int_equal(wl_run(&L, -1, NULL, NULL), 0);
  assert_int_equal(R.n, 2);
  assert_int_equal(R.id[0], 2);
  assert_int_equal(R.id[1], 1);
}

/* A job that cancels the last job of the current turn: jobs it defers must still
 * wait for the next turn. */
static wl_job ct_a, ct_b, ct_c;
static void ct_a_cb(void *ud) {
  (void)ud;
  note(1);
  wl_cancel(&L, &ct_b);
  wl_defer(&L, &ct_c, note_cb, ID(3));
}

static void test_job_deferred_after_cancelling_the_turns_last_job_waits_for_next_turn(void **state) {
  (void)state;
  memset(&ct_a, 0, sizeof ct_a);
  memset(&ct_b, 0, sizeof ct_b);
  memset(&ct_c, 0, sizeof ct_c);
  wl_defer(&L, &ct_a, ct_a_cb, NULL);
  wl_defer(&L, &ct_b, note_cb, ID(2));
  assert_int_equal(wl_run(&L, -1, count_turn, NULL), 0);
  assert_int_equal(R.n, 2);
  assert_int_equal(R.id[0], 1);
  assert_int_equal(R.id[1], 3);
  if (R.turn[1] <= R.turn[0]) fail_msg("job deferred in turn %d ran in that same turn", R.turn[0]);
}

/* A job may cancel a later job of the turn being run: that job does not run. */
static wl_job cm_a, cm_b, cm_c;
static int cm_virtual_rc, cm_busy;
static void cm_a_cb(void *ud) {
  (void)ud;
  note(1);
  wl_cancel(&L, &cm_b);
  cm_busy = wl_busy(&L);                 /* cm_c is still due in this turn */
  cm_virtual_rc = wl_set_virtual(&L, 0); /* so switching clocks is refused */
}

static void test_job_cancelled_by_an_earlier_job_of_the_same_turn_does_not_run(void **state) {
  (void)state;
  memset(&cm_a, 0, sizeof cm_a);
  memset(&cm_b, 0, sizeof cm_b);
  memset(&cm_c, 0, sizeof cm_c);
  wl_defer(&L, &cm_a, cm_a_cb, NULL);
  wl_defer(&L, &cm_b, note_cb, ID(2));
  wl_defer(&L, &cm_c, note_cb, ID(3));
  assert_int_equal(wl_run(&L, -1, count_turn, NULL), 0);
  assert_int_equal(R.n, 2);
  assert_int_equal(R.id[0], 1);
  assert_int_equal(R.id[1], 3);
  assert_int_equal(R.turn[1], R.turn[0]); /* c still ran in the same turn */
  assert_false(cm_b.queued);
  assert_true(cm_busy);
  assert_int_equal(cm_virtual_rc, -1);
  wl_defer(&L, &cm_b, note_cb, ID(2)); /* the cancelled job can be queued again */
  assert_int_equal(wl_run(&L, -1, NULL, NULL), 0);
  assert_int_equal(R.n, 3);
  assert_int_equal(R.id[2], 2);
}

/* wl_run may nest (the loop counts its depth): a job that drives the loop itself
 * must not lose the jobs still due in the outer turn. */
static wl_job nest_a, nest_b, nest_c;
static int nest_c_ran(void *ud) {
  (void)ud;
  return R.n >= 2 && R.id[R.n - 1] == 3;
}
static void nest_a_cb(void *ud) {
  (void)ud;
  note(1);
  wl_defer(&L, &nest_c, note_cb, ID(3));
  assert_int_equal(wl_run(&L, -1, nest_c_ran, NULL), 1);
}

static void test_nested_run_from_a_job_keeps_the_outer_turns_remaining_jobs(void **state) {
  int i, seen_b = 0;
  (void)state;
  memset(&nest_a, 0, sizeof nest_a);
  memset(&nest_b, 0, sizeof nest_b);
  memset(&nest_c, 0, sizeof nest_c);
  wl_defer(&L, &nest_a, nest_a_cb, NULL);
  wl_defer(&L, &nest_b, note_cb, ID(2));
  assert_int_equal(wl_run(&L, -1, NULL, NULL), 0);
  for (i = 0; i < R.n; i++) seen_b += R.id[i] == 2;
  if (seen_b != 1) fail_msg("job b ran %d times (want 1); b.queued=%d", seen_b, nest_b.queued);
  assert_false(nest_b.queued);
  assert_int_equal(R.n, 3);
  assert_int_equal(R.id[0], 1);
}

/* ---- wl_run ----------------------------------------------------------------- */

static int always(void *ud) {
  (void)ud;
  return 1;
}

static int flag_set(void *ud) { return *(int *)ud; }
static void set_flag(void *ud) { *(int *)ud = 1; }

static void test_run_returns_1_when_done_holds(void **state) {
  wl_job j = {0};
  wl_timer t = {0};
  int flag = 0;
  (void)state;
  wl_defer(&L, &j, note_cb, ID(1));
  assert_int_equal(wl_run(&L, -1, always, NULL), 1);
  assert_int_equal(R.n, 0); /* done is checked before any turn */
  wl_cancel(&L, &j);
  wl_timer_start(&L, &t, 300, set_flag, &flag);
  assert_int_equal(wl_run(&L, 1000, flag_set, &flag), 1);
  assert_int_equal(wl_now(&L), 300); /* stopped when done held, not at the deadline */
}

static void test_run_returns_0_at_deadline_and_time_jumps_there(void **state) {
  wl_timer t = {0};
  (void)state;
  wl_timer_start(&L, &t, 1000, note_cb, ID(1));
  assert_int_equal(wl_run(&L, 300, NULL, NULL), 0);
  assert_int_equal(wl_now(&L), 300);
  assert_int_equal(R.n, 0);
  assert_true(wl_timer_active(&t));
  assert_int_equal(wl_run(&L, 300, NULL, NULL), 0); /* a deadline already reached returns at once */
  assert_int_equal(wl_now(&L), 300);
  assert_int_equal(wl_run(&L, -1, NULL, NULL), 0); /* jumps to the timer */
  assert_int_equal(R.n, 1);
  assert_int_equal(R.at[0], 1000);
}

/* The boundary as implemented: a timer due exactly at the run deadline fires at the
 * start of the next run (at that same time), not in this one. */
static void test_timer_due_at_the_run_deadline_fires_in_the_next_run(void **state) {
  wl_timer t = {0};
  (void)state;
  wl_timer_start(&L, &t, 100, note_cb, ID(1));
  assert_int_equal(wl_run(&L, 100, NULL, NULL), 0);
  assert_int_equal(wl_now(&L), 100);
  assert_int_equal(R.n, 0);
  assert_int_equal(wl_run(&L, 101, NULL, NULL), 0);
  assert_int_equal(R.n, 1);
  assert_int_equal(R.at[0], 100);
}

static void test_run_returns_0_when_idle_without_moving_time(void **state) {
  wl_timer t = {0};
  (void)state;
  assert_false(wl_busy(&L));
  assert_int_equal(wl_run(&L, -1, NULL, NULL), 0);
  assert_int_equal(wl_run(&L, 5000, count_turn, NULL), 0);
  assert_int_equal(turns, 1);
  assert_int_equal(wl_now(&L), 0);
  wl_timer_start(&L, &t, 40, note_cb, ID(1));
  assert_int_equal(wl_run(&L, 5000, NULL, NULL), 0); /* idle after the timer: stops at 40 */
  assert_int_equal(wl_now(&L), 40);
}

static void stop_cb(void *ud) {
  (void)ud;
  note(1);
  wl_stop(&L);
}

static void test_wl_stop_ends_the_run_with_0(void **state) {
  wl_timer a = {0}, b = {0};
  (void)state;
  wl_timer_start(&L, &a, 10, stop_cb, NULL);
  wl_timer_start(&L, &b, 20, note_cb, ID(2));
  assert_int_equal(wl_run(&L, -1, NULL, NULL), 0);
  assert_int_equal(R.n, 1);
  assert_true(wl_timer_active(&b));
  assert_int_equal(L.running, 0);
  assert_int_equal(wl_run(&L, -1, NULL, NULL), 0); /* the stop flag was consumed */
  assert_int_equal(R.n, 2);
}

/* ---- virtual clock ---------------------------------------------------------- */

static void test_virtual_time_jumps_to_each_deadline_without_waiting(void **state) {
  wl_timer t[3] = {{0}};
  struct timespec a, b;
  double ms;
  (void)state;
  wl_timer_start(&L, &t[0], 3600000, note_cb, ID(0)); /* an hour */
  wl_timer_start(&L, &t[1], 86400000, note_cb, ID(1)); /* a day */
  wl_timer_start(&L, &t[2], 5, note_cb, ID(2));
  clock_gettime(CLOCK_MONOTONIC, &a);
  assert_int_equal(wl_run(&L, -1, count_turn, NULL), 0);
  clock_gettime(CLOCK_MONOTONIC, &b);
  ms = (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
  assert_int_equal(R.n, 3);
  assert_int_equal(R.at[0], 5);
  assert_int_equal(R.at[1], 3600000);
  assert_int_equal(R.at[2], 86400000);
  assert_int_equal(wl_now(&L), 86400000);
  assert_true(turns < 10); /* one jump and one firing turn per timer */
  assert_true(ms < 2000.0);
}

static void test_set_virtual_refuses_a_mode_change_while_timers_or_jobs_are_active(void **state) {
  wl_timer t = {0};
  wl_job j = {0};
  (void)state;
  wl_timer_start(&L, &t, 10, note_cb, ID(1));
  assert_int_equal(wl_run(&L, 5, NULL, NULL), 0);
  assert_int_equal(wl_now(&L), 5);
  assert_int_equal(wl_set_virtual(&L, 0), -1);
  assert_int_equal(L.virt, 1);
  assert_int_equal(wl_now(&L), 5); /* refusing changes nothing */
  assert_int_equal(wl_set_virtual(&L, 1), 0); /* virtual again: time restarts, the deadline keeps its distance */
  assert_int_equal(wl_now(&L), 0);
  assert_int_equal(t.due, 5);
  wl_timer_stop(&L, &t);
  wl_defer(&L, &j, note_cb, ID(2));
  assert_int_equal(wl_set_virtual(&L, 0), -1);
  wl_cancel(&L, &j);
  assert_int_equal(wl_set_virtual(&L, 1), 0);
  assert_int_equal(wl_now(&L), 0); /* virtual time restarts at 0 */
  assert_int_equal(wl_set_virtual(&L, 0), 0);
  assert_int_equal(L.virt, 0);
  assert_int_equal(wl_set_virtual(&L, 1), 0);
  assert_int_equal(L.virt, 1);
}

/* ---- random ----------------------------------------------------------------- */

static void test_random_is_in_unit_interval_and_roughly_uniform(void **state) {
  int i, bucket[10] = {0};
  double sum = 0, lo = 1, hi = 0;
  (void)state;
  wl_seed(&L, 12345);
  for (i = 0; i < 100000; i++) {
    double x = wl_random(&L);
    if (!(x >= 0.0 && x < 1.0)) fail_msg("wl_random gave %.17g", x);
    sum += x;
    if (x < lo) lo = x;
    if (x > hi) hi = x;
    bucket[(int)(x * 10)]++;
  }
  assert_true(sum / 100000 > 0.49 && sum / 100000 < 0.51);
  assert_true(lo < 0.001 && hi > 0.999);
  for (i = 0; i < 10; i++) assert_true(bucket[i] > 9500 && bucket[i] < 10500);
}

static void test_random_is_reproducible_with_seed(void **state) {
  double a[64], b[64];
  int i, same = 0;
  (void)state;
  wl_seed(&L, 42);
  for (i = 0; i < 64; i++) a[i] = wl_random(&L);
  wl_seed(&L, 42);
  for (i = 0; i < 64; i++) b[i] = wl_random(&L);
  assert_memory_equal(a, b, sizeof a);
  wl_seed(&L, 43);
  for (i = 0; i < 64; i++) same += wl_random(&L) == a[i];
  assert_int_equal(same, 0);
  for (i = 1; i < 64; i++) assert_true(a[i] != a[i - 1]);
}

/* ---- real clock ------------------------------------------------------------- */

static int real_turns;
static int flag_count(void *ud) {
  real_turns++;
  return *(int *)ud;
}

static void test_real_clock_timer_fires_after_its_delay(void **state) {
  wl_timer t = {0};
  int fired = 0;
  int64_t t0, t1;
  struct timespec a, b;
  double ms;
  (void)state;
  assert_int_equal(L.virt, 0);
  real_turns = 0;
  clock_gettime(CLOCK_MONOTONIC, &a);
  t0 = wl_now(&L);
  wl_timer_start(&L, &t, 20, set_flag, &fired);
  assert_int_equal(wl_run(&L, -1, flag_count, &fired), 1);
  t1 = wl_now(&L);
  clock_gettime(CLOCK_MONOTONIC, &b);
  ms = (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
  assert_true(t1 - t0 >= 20);
  /* The loop clock counts whole ms, so real time may be up to 1 ms short of 20. */
  if (ms < 19.0) fail_msg("fired after %.3f ms of real time", ms);
  assert_true(ms < 2000.0);
  assert_true(real_turns < 20); /* it slept in libuv; it did not spin */
}

static void test_real_clock_run_deadline_returns_0(void **state) {
  wl_timer t = {0};
  int64_t t0;
  (void)state;
  wl_timer_start(&L, &t, 10000, note_cb, ID(1));
  t0 = wl_now(&L);
  assert_int_equal(wl_run(&L, t0 + 15, NULL, NULL), 0);
  assert_true(wl_now(&L) >= t0 + 15);
  assert_true(wl_now(&L) < t0 + 2000);
  assert_int_equal(R.n, 0);
  wl_timer_stop(&L, &t);
}

/* ---- wl_close --------------------------------------------------------------- */

static int closed_calls;
static void on_closed(uv_handle_t *h) {
  (void)h;
  closed_calls++;
}
static void never(uv_timer_t *h) { (void)h; }

static void test_close_after_handles_runs_pending_close_callbacks_and_closes_leftovers(void **state) {
  uv_timer_t owned, leftover;
  uv_idle_t idle;
  wl_timer t = {0};
  (void)state;
  closed_calls = 0;
  assert_int_equal(uv_timer_init(&L.uv, &owned), 0);
  assert_int_equal(uv_timer_init(&L.uv, &leftover), 0);
  assert_int_equal(uv_idle_init(&L.uv, &idle), 0);
  assert_int_equal(uv_timer_start(&leftover, never, 100000, 0), 0);
  wl_timer_start(&L, &t, 10, note_cb, ID(1));
  uv_close((uv_handle_t *)&owned, on_closed); /* the owner closed it; the callback is still due */
  assert_int_equal(closed_calls, 0);
  wl_close(&L);
  assert_int_equal(closed_calls, 1);
  assert_true(uv_is_closing((uv_handle_t *)&leftover));
  assert_true(uv_is_closing((uv_handle_t *)&idle));
  assert_null(L.heap);
  assert_int_equal(L.n, 0);
  /* wl_close succeeded in closing the uv loop: it can be initialised again. */
  assert_int_equal(wl_init(&L), 0);
}

static void test_close_of_a_loop_that_ran_jobs_and_timers(void **state) {
  wl_timer t[100] = {{0}};
  int i;
  (void)state;
  for (i = 0; i < 100; i++) wl_timer_start(&L, &t[i], i, note_cb, ID(i)); /* grows the heap past 16 */
  assert_true(L.cap >= 100);
  assert_int_equal(wl_run(&L, 50, NULL, NULL), 0);
  assert_int_equal(R.n, 50);
  /* teardown closes with 50 timers still linked: the heap array is freed (valgrind) */
}

/* ---- restarts of virtual time from a job ------------------------------------- */

static wl_timer restart_t;
static wl_job restart_job;
static void restart_cb(void *ud) {
  (void)ud;
  assert_int_equal(wl_set_virtual(&L, 1), 0);
}

/* A job that restarts virtual time moves the turn's "now" back with every deadline: a
 * timer 500 ms away still fires 500 ms after the restart. */
static void test_restart_in_a_job_keeps_timer_distances(void **state) {
  (void)state;
  wl_timer_start(&L, &restart_t, 1000, note_cb, ID(0)); /* moves time to 1000 */
  assert_int_equal(wl_run(&L, -1, NULL, NULL), 0);
  wl_timer t;
  memset(&t, 0, sizeof t);
  wl_timer_start(&L, &t, 500, note_cb, ID(1));
  wl_defer(&L, &restart_job, restart_cb, NULL);
  assert_int_equal(wl_run(&L, -1, NULL, NULL), 0);
  const int want[] = {0, 1};
  assert_ids(want, 2);
  assert_int_equal(R.at[1], 500);
}

static wl_timer far_t;
static void nested_then_restart_cb(void *ud) {
  (void)ud;
  wl_run(&L, wl_now(&L) + 500, NULL, NULL); /* virtual time reaches 500 */
  assert_int_equal(wl_set_virtual(&L, 1), 0);
}

/* A run whose deadline a restart has put in the past returns at once, not at the next
 * timer (a negative deadline would read as none). */
static void test_restart_past_a_run_deadline_ends_the_run(void **state) {
  (void)state;
  wl_timer_start(&L, &far_t, 10000, note_cb, ID(9));
  wl_defer(&L, &restart_job, nested_then_restart_cb, NULL);
  assert_int_equal(wl_run(&L, 100, NULL, NULL), 0);
  assert_int_equal(R.n, 0);     /* the far timer did not fire */
  assert_true(wl_now(&L) <= 100);
  wl_timer_stop(&L, &far_t);
}

/* A delay near INT64_MAX saturates: the timer is never due, not due at once. */
static void test_huge_delay_saturates(void **state) {
  (void)state;
  wl_timer t;
  memset(&t, 0, sizeof t);
  wl_timer_start(&L, &restart_t, 5, note_cb, ID(0));
  assert_int_equal(wl_run(&L, -1, NULL, NULL), 0);
  wl_timer_start(&L, &t, INT64_MAX, note_cb, ID(1));
  assert_int_equal(t.due, INT64_MAX);
  assert_int_equal(wl_run(&L, 1000, NULL, NULL), 0);
  const int want[] = {0};
  assert_ids(want, 1);
  wl_timer_stop(&L, &t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_timers_fire_in_deadline_order, setup_virtual, teardown),
      cmocka_unit_test_setup_teardown(test_equal_deadlines_fire_in_start_order, setup_virtual, teardown),
      cmocka_unit_test_setup_teardown(test_restarting_a_timer_moves_it_behind_equal_deadlines, setup_virtual, teardown),
      cmocka_unit_test_setup_teardown(test_negative_delay_fires_now, setup_virtual, teardown),
      cmocka_unit_test_setup_teardown(test_stop_removes_heap_last_element, setup_virtual, teardown),
      cmocka_unit_test_setup_teardown(test_stop_middle_element_sifts_replacement_up, setup_virtual, teardown),
      cmocka_unit_test_setup_teardown(test_stop_middle_element_sifts_replacement_down, setup_virtual, teardown),
      cmocka_unit_test_setup_teardown(test_stop_root_and_only_element, setup_virtual, teardown),
      cmocka_unit_test_setup_teardown(test_timer_stopped_by_an_earlier_callback_in_the_same_turn_does_not_fire,
                                      setup_virtual, teardown),
      cmocka_unit_test_setup_teardown(test_random_start_stop_matches_reference_model, setup_virtual, teardown),
      cmocka_unit_test_setup_teardown(test_zero_delay_timer_started_in_callback_fires_on_a_later_turn, setup_virtual,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_self_restarting_zero_delay_timer_does_not_starve_a_due_timer,
                                      setup_virtual, teardown),
      cmocka_unit_test_setup_teardown(test_jobs_run_fifo_on_the_next_turn, setup_virtual, teardown),
      cmocka_unit_test_setup_teardown(test_job_queued_twice_runs_once_with_its_first_callback, setup_virtual, teardown),
      cmocka_unit_test_setup_teardown(test_job_deferred_by_a_job_runs_on_a_later_turn, setup_virtual, teardown),
      cmocka_unit_test_setup_teardown(test_jobs_run_before_due_timers, setup_virtual, teardown),
      cmocka_unit_test_setup_teardown(test_cancel_head_middle_and_tail, setup_virtual, teardown),
      cmocka_unit_test_setup_teardown(test_cancel_the_only_job_leaves_the_loop_idle, setup_virtual, teardown),
      cmocka_unit_test_setup_teardown(test_job_deferred_after_cancelling_the_turns_last_job_waits_for_next_turn,
                                      setup_virtual, teardown),
      cmocka_unit_test_setup_teardown(test_job_cancelled_by_an_earlier_job_of_the_same_turn_does_not_run,
                                      setup_virtual, teardown),
      cmocka_unit_test_setup_teardown(test_nested_run_from_a_job_keeps_the_outer_turns_remaining_jobs, setup_virtual,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_run_returns_1_when_done_holds, setup_virtual, teardown),
      cmocka_unit_test_setup_teardown(test_run_returns_0_at_deadline_and_time_jumps_there, setup_virtual, teardown),
      cmocka_unit_test_setup_teardown(test_timer_due_at_the_run_deadline_fires_in_the_next_run, setup_virtual, teardown),
      cmocka_unit_test_setup_teardown(test_run_returns_0_when_idle_without_moving_time, setup_virtual, teardown),
      cmocka_unit_test_setup_teardown(test_wl_stop_ends_the_run_with_0, setup_virtual, teardown),
      cmocka_unit_test_setup_teardown(test_virtual_time_jumps_to_each_deadline_without_waiting, setup_virtual, teardown),
      cmocka_unit_test_setup_teardown(test_set_virtual_refuses_a_mode_change_while_timers_or_jobs_are_active, setup_virtual, teardown),
      cmocka_unit_test_setup_teardown(test_random_is_in_unit_interval_and_roughly_uniform, setup_virtual, teardown),
      cmocka_unit_test_setup_teardown(test_random_is_reproducible_with_seed, setup_virtual, teardown),
      cmocka_unit_test_setup_teardown(test_restart_in_a_job_keeps_timer_distances, setup_virtual, teardown),
      cmocka_unit_test_setup_teardown(test_restart_past_a_run_deadline_ends_the_run, setup_virtual, teardown),
      cmocka_unit_test_setup_teardown(test_huge_delay_saturates, setup_virtual, teardown),
      cmocka_unit_test_setup_teardown(test_real_clock_timer_fires_after_its_delay, setup_real, teardown),
      cmocka_unit_test_setup_teardown(test_real_clock_run_deadline_returns_0, setup_real, teardown),
      cmocka_unit_test_setup_teardown(test_close_after_handles_runs_pending_close_callbacks_and_closes_leftovers,
                                      setup_virtual, teardown),
      cmocka_unit_test_setup_teardown(test_close_of_a_loop_that_ran_jobs_and_timers, setup_virtual, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
