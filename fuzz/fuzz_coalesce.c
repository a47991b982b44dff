/* fuzz_coalesce.c: the coalescer against a reference model (common.h ref_coalesce).
 *
 * The input decodes into a header and a sequence of operations:
 *   header  byte 0: bits 0-1 merge-key set (default, none, {"a"}, {"a","","external_metadata"}),
 *                   bit 2: the direct path writes patches through ps_merge_slot + ps_obj_set
 *                   (what the Lua binding's commit does) instead of ps_coalesce;
 *           byte 1: jitter seed;
 *           byte 2: timing: bits 0-1 base_ms {500, 0, 1, 100}, bits 2-3 max_ms {30000, 0,
 *                   1000, 1e12}, bits 4-5 jitter_ms {500, 0, 1, 10000}.
 *   op byte b, by b % 8:
 *     0-3  enqueue a patch (decoded from the following bytes, see gen_patch)
 *     4    finish the attempt in flight: (b >> 3) % 3 = OK, RETRY, DROP; a RETRY takes
 *          one more byte: retry-after = byte * 37 ms (0xff: 1e15 ms, the most the Lua
 *          binding passes)
 *     5    run the virtual-clock loop for (next byte) * 16 ms
 *     6    check the direct path's pending now, then, when b >= 128, take it as sent
 *     7    b == 0xff: close the uploader; else run the loop until the uploader is idle
 *          (answering every attempt in flight OK)
 * When the fake send is called it reads one byte: if byte % 4 == 0 it finishes the
 * attempt at once (inside send) with result (byte >> 2) % 3.
 *
 * Each patch goes, as its own copy, through
 *   A. the direct path: ps_coalesce (or ps_merge_slot) into one pending ps_obj;
 *   B. the uploader: upl_enqueue on a virtual-clock wl_loop with a fake ops->send;
 * and into the reference model, which tracks A's pending and B's pending and
 * payload (a retry absorbs pending into the payload: ref_coalesce(payload, pending)).
 * Every check compares ps_encode output, parsed by jansson, with the model
 * (same_json: integers exact, reals bitwise). B also checks one attempt in flight,
 * never sending inside enqueue, stats, and backoff times.
 *
 * FUZZ_STRICT=1 adds an end-to-end check that the documented semantics do not
 * guarantee (see fuzz/README.md, finding F1): the server state reached by folding
 * the delivered payloads equals the state reached by folding every patch one by
 * one. It fails on coalescing "k: non-object" then "k: {...}" under a merge key. */
#include <math.h>

#include "common.h"
#include "evloop.h"
#include "pstore.h"
#include "uploader.h"

#define MAX_DEPTH 3

static const char *const top_keys[8] = {
    "worker_status", "external_metadata", "internal_metadata", "a",
    "b", "", "a_top_level_key_longer_than_20", "external_metadata_x"};
static const char *const inner_keys[8] = {
    "x", "y", "z", "", "step", "an_inner_key_longer_than_twenty", "external_metadata", "\xc3\xa9"};
/* String pieces: escapes, control bytes, NUL, and 2-, 3- and 4-byte UTF-8. */
static const char *const pieces[16] = {
    "a", "b", " ", "\"", "\\", "\n", "\x01", "\x1f", "\x7f", "\xc3\xa9", "\xe2\x82\xac",
    "\xf0\x9f\x98\x80", "/", "\t", "z", ""};
static const size_t piece_len[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 3, 4, 1, 1, 1, 1};

static const char *const keys_a[] = {"a"};
static const char *const keys_mixed[] = {"a", "", "external_metadata"};
static const char *const keys_default[] = {"external_metadata", "internal_metadata"};
static const keyset keysets[4] = {{keys_default, 2}, {NULL, 0}, {keys_a, 1}, {keys_mixed, 3}};

/* ---- decoding values: each one built as a ps_val and as jansson ---------------- */

static void gen_value(src *s, int depth, ps_val *pv, json_t **jv);

static void gen_string(src *s, int lng, ps_val *pv, json_t **jv) {
  char b[4 * 40];
  size_t n = 0, pieces_n = lng ? 8 + take(s) % 24 : take(s) % 8;
  for (size_t i = 0; i < pieces_n; i++) {
    unsigned c = take(s) & 15;
    if (c == 15) b[n++] = '\0'; /* piece 15: a NUL byte */
    else memcpy(b + n, pieces[c], piece_len[c]), n += piece_len[c];
  }
  *pv = ps_str(b, n);
  *jv = json_stringn(b, n);
  if (ps_typeof(pv) != PS_STR || !*jv) die("out of memory");
}

static void gen_object(src *s, int depth, const char *const *names, ps_val *pv, json_t **jv) {
  unsigned n = take(s) % 5;
  ps_obj *o = ps_obj_new(take(s) % 3);
  json_t *j = json_object();
  for (unsigned i = 0; i < n; i++) {
    const char *k = names[take(s) & 7];
    ps_val v;
    json_t *x;
    gen_value(s, depth + 1, &v, &x);
    if (ps_obj_set(o, k, strlen(k), v) != 0 || json_object_set_new(j, k, x) != 0) die("out of memory");
  }
  *pv = ps_obj_val(o);
  *jv = j;
}

static void gen_value(src *s, int depth, ps_val *pv, json_t **jv) {
  unsigned t = take(s) % 10;
  if (depth >= MAX_DEPTH && t >= 8) t = 0;
  switch (t) {
  case 0: *pv = ps_null(), *jv = json_null(); break;
  case 1: *pv = ps_bool(0), *jv = json_false(); break;
  case 2: *pv = ps_bool(1), *jv = json_true(); break;
  case 3: { int64_t i = (int8_t)take(s); *pv = ps_int(i), *jv = json_integer(i); break; }
  case 4: { int64_t i = (int64_t)take64(s); *pv = ps_int(i), *jv = json_integer(i); break; }
  case 5: {
    uint64_t bits = take64(s);
    double d;
    memcpy(&d, &bits, sizeof d);
    *pv = ps_real(d);
    *jv = isfinite(d) ? json_real(d) : json_null(); /* non-finite reals are written as null */
    break;
  }
  case 6: gen_string(s, 0, pv, jv); break;
  case 7: gen_string(s, 1, pv, jv); break;
  case 8: {
    unsigned n = take(s) % 4;
    ps_arr *a = ps_arr_new(0);
    json_t *j = json_array();
    for (unsigned i = 0; i < n; i++) {
      ps_val v;
      json_t *x;
      gen_value(s, depth + 1, &v, &x);
      if (ps_arr_push(a, v) != 0 || json_array_append_new(j, x) != 0) die("out of memory");
    }
    *pv = ps_arr_val(a), *jv = j;
    break;
  }
  default: gen_object(s, depth, inner_keys, pv, jv); break;
  }
}

/* A patch: up to 5 members with top-level names. */
static ps_obj *gen_patch(src *s, json_t **jv) {
  ps_val v;
  gen_object(s, 0, top_keys, &v, jv);
  return ps_obj_of(&v);
}

/* ---- helpers ------------------------------------------------------------------- */

static void expect_obj(const ps_obj *o, const json_t *want, const char *what) {
  json_t *got = encode_parse(o, what);
  ps_val view = ps_obj_val((ps_obj *)o); /* borrowed view, not freed */
  json_t *via = ps_to_json(&view);
  if (!same_json(got, want)) die("%s: got %s, model %s", what, show(got), show(want));
  if (!via || !same_json(via, got)) die("%s: ps_to_json %s differs from ps_encode %s", what, show(via), show(got));
  json_decref(got);
  json_decref(via);
}

/* What lconv.c's commit does: merge-key objects member by member into
 * ps_merge_slot, everything else by ps_obj_set. Consumes patch. */
static void commit_slots(ps_obj *pending, ps_obj *patch, const ps_keys *keys) {
  size_t it = 0, kn;
  const char *k;
  const ps_val *v;
  while (ps_obj_next(patch, &it, &k, &kn, &v)) {
    ps_val c;
    if (ps_typeof(v) == PS_OBJ && ps_is_merge_key(keys, k, kn)) {
      ps_obj *slot = ps_merge_slot(pending, k, kn);
      size_t jt = 0, ikn;
      const char *ik;
      const ps_val *iv;
      if (!slot) die("ps_merge_slot: out of memory");
      while (ps_obj_next(ps_obj_of(v), &jt, &ik, &ikn, &iv))
        if (ps_copy(&c, iv) != 0 || ps_obj_set(slot, ik, ikn, c) != 0) die("out of memory");
    } else if (ps_copy(&c, v) != 0 || ps_obj_set(pending, k, kn, c) != 0) {
      die("out of memory");
    }
  }
  ps_obj_free(patch);
}

/* ---- the run ---------------------------------------------------------------------- */

typedef struct run {
  src in;
  const keyset *ks;
  ps_keys keys;       /* the same set for pstore */
  int slots;          /* direct path through ps_merge_slot */
  /* A: direct */
  ps_obj *a_pending;
  json_t *a_model;    /* NULL when nothing is pending */
  /* B: uploader */
  upl up;
  json_t *m_pending, *m_payload; /* model; NULL when none */
  int inflight, in_enqueue, closed;
  int64_t planned_at; /* model: time of the planned retry, -1 when none */
  upl_stats want;     /* model stats */
  uint64_t want_bytes;
  /* FUZZ_STRICT: what the server would hold */
  json_t *srv_batched, *srv_each;
  int lossy;          /* a drop or a close lost patches: the strict check does not apply */
} run;

static wl_loop loop;
static int strict;

static void finish(run *r, upl_result res, int64_t retry_after);

static void on_send(upl *u) {
  run *r = u->ud;
  json_t *body;
  unsigned b;
  if (r->inflight) die("send while an attempt is in flight");
  if (r->in_enqueue) die("send started inside enqueue");
  if (u->phase != UPL_SENDING) die("send in phase %d", (int)u->phase);
  if (r->m_payload) { /* a retry: pending is absorbed first */
    if (wl_now(&loop) != r->planned_at) die("retry at %lld, planned %lld", (long long)wl_now(&loop), (long long)r->planned_at);
    if (r->m_pending) {
      ref_coalesce(r->m_payload, r->m_pending, r->ks);
      json_decref(r->m_pending);
      r->m_pending = NULL;
      r->want.absorbed++;
    }
  } else {
    if (!r->m_pending) die("send with nothing pending");
    r->m_payload = r->m_pending;
    r->m_pending = NULL;
  }
  body = parse_out(u->body, u->body_len, "uploader body");
  if (strlen(u->body) != u->body_len) die("body_len %zu, text %zu", u->body_len, strlen(u->body));
  if (!same_json(body, r->m_payload)) die("uploader sent %s, model %s", show(body), show(r->m_payload));
  json_decref(body);
  r->want.attempts++;
  r->want_bytes += u->body_len;
  r->inflight = 1;
  r->planned_at = -1;
  b = take(&r->in);
  if (b % 4 == 0) finish(r, (upl_result)((b >> 2) % 3), 0); /* answered inside send */
}

static void on_settled(upl *u) { (void)u; }

static const upl_ops ops = {on_send, on_settled};

/* Backoff bounds for the nth consecutive failure, from README's formula. */
static void backoff_bounds(const upl *u, unsigned n, int64_t ra, int64_t *lo, int64_t *hi) {
  double e = (double)u->base_ms;
  for (unsigned i = 1; i < n && e < (double)u->max_ms; i++) e *= 2;
  if (e > (double)u->max_ms) e = (double)u->max_ms;
  *lo = (int64_t)e;
  *hi = (int64_t)e + (u->jitter_ms > 0 ? u->jitter_ms - 1 : 0);
  if (ra > *lo) *lo = ra;
  if (ra > *hi) *hi = ra;
}

/* Ends the attempt in flight with res, in the uploader and in the model. */
static void finish(run *r, upl_result res, int64_t retry_after) {
  upl *u = &r->up;
  int64_t t = wl_now(&loop), lo, hi;
  if (!r->inflight) return;
  r->inflight = 0;
  if (res == UPL_RETRY) {
    r->want.failures++;
    r->want.consecutive_failures++;
  } else {
    r->want.consecutive_failures = 0;
    if (res == UPL_OK) r->want.delivered++;
    else r->want.dropped++;
  }
  upl_done(u, res, retry_after, res == UPL_OK ? NULL : "fuzz");
  if (res == UPL_OK) ref_server_fold(r->srv_batched, r->m_payload, r->ks);
  if (res == UPL_RETRY && !r->closed) {
    backoff_bounds(u, r->want.consecutive_failures, retry_after, &lo, &hi);
    if (u->phase != UPL_BACKOFF && u->phase != UPL_SENDING) die("after a failure: phase %d", (int)u->phase);
    /* phase SENDING: a zero delay fired already, inside upl_done? Not allowed. */
    if (u->phase == UPL_SENDING) die("retry started inside upl_done");
    if (upl_next_attempt(u) < t + lo || upl_next_attempt(u) > t + hi)
      die("failure %u: next attempt at %lld, want [%lld, %lld]", r->want.consecutive_failures,
          (long long)upl_next_attempt(u), (long long)(t + lo), (long long)(t + hi));
    r->planned_at = upl_next_attempt(u);
    return;
  }
  if (res != UPL_OK) r->lossy = 1;
  json_decref(r->m_payload);
  r->m_payload = NULL;
}

static void enqueue(run *r) {
  json_t *jp, *one;
  ps_obj *pa = gen_patch(&r->in, &jp), *pb;
  ps_val va = ps_obj_val(pa), vb;
  int had = r->a_pending != NULL, rc;
  if (ps_copy(&vb, &va) != 0) die("ps_copy: out of memory");
  pb = ps_obj_of(&vb);
  /* A: the copy must equal the original */
  one = encode_parse(pb, "ps_copy of a patch");
  if (!same_json(one, jp)) die("patch encodes as %s, built as %s", show(one), show(jp));
  json_decref(one);
  if (!had && !(r->a_pending = ps_obj_new(take(&r->in) % 9))) die("out of memory");
  if (r->slots) commit_slots(r->a_pending, pa, &r->keys);
  else if (ps_coalesce(r->a_pending, pa, &r->keys) != 0) die("ps_coalesce failed");
  if (!r->a_model) r->a_model = json_object();
  ref_coalesce(r->a_model, jp, r->ks);
  /* B */
  had = r->up.pending != NULL;
  r->in_enqueue = 1;
  rc = upl_enqueue(&r->up, pb);
  r->in_enqueue = 0;
  if (rc != (r->closed ? 0 : 1)) die("upl_enqueue returned %d (closed %d)", rc, r->closed);
  if (!r->closed) {
    r->want.enqueued++;
    if (had) r->want.coalesced++;
    if (!r->m_pending) r->m_pending = json_object();
    ref_coalesce(r->m_pending, jp, r->ks);
    ref_server_fold(r->srv_each, jp, r->ks);
  }
  json_decref(jp);
}

static void check_direct(run *r, int sent) {
  if (!r->a_pending) return;
  expect_obj(r->a_pending, r->a_model, "direct pending");
  if (!sent) return;
  ps_obj_free(r->a_pending);
  json_decref(r->a_model);
  r->a_pending = NULL;
  r->a_model = NULL;
}

static void check_upl(run *r) {
  const upl *u = &r->up;
  const upl_stats *g = &u->st, *w = &r->want;
  if ((u->pending != NULL) != (r->m_pending != NULL))
    die("uploader pending %s, model %s", u->pending ? "set" : "none", show(r->m_pending));
  if (u->pending) expect_obj(u->pending, r->m_pending, "uploader pending");
  if ((u->payload != NULL) != (r->m_payload != NULL))
    die("uploader payload %s, model %s", u->payload ? "set" : "none", show(r->m_payload));
  if (u->payload) expect_obj(u->payload, r->m_payload, "uploader payload");
  if ((u->phase == UPL_SENDING) != r->inflight) die("phase %d, in flight %d", (int)u->phase, r->inflight);
  if (g->enqueued != w->enqueued || g->coalesced != w->coalesced || g->absorbed != w->absorbed ||
      g->attempts != w->attempts || g->delivered != w->delivered || g->failures != w->failures ||
      g->dropped != w->dropped || g->consecutive_failures != w->consecutive_failures ||
      g->bytes_sent != r->want_bytes)
    die("stats: enqueued %llu/%llu coalesced %llu/%llu absorbed %llu/%llu attempts %llu/%llu "
        "delivered %llu/%llu failures %llu/%llu dropped %llu/%llu consecutive %u/%u bytes %llu/%llu (got/model)",
        (unsigned long long)g->enqueued, (unsigned long long)w->enqueued, (unsigned long long)g->coalesced,
        (unsigned long long)w->coalesced, (unsigned long long)g->absorbed, (unsigned long long)w->absorbed,
        (unsigned long long)g->attempts, (unsigned long long)w->attempts, (unsigned long long)g->delivered,
        (unsigned long long)w->delivered, (unsigned long long)g->failures, (unsigned long long)w->failures,
        (unsigned long long)g->dropped, (unsigned long long)w->dropped, g->consecutive_failures,
        w->consecutive_failures, (unsigned long long)g->bytes_sent, (unsigned long long)r->want_bytes);
}

static int settled(void *ud) {
  run *r = ud;
  return r->inflight || upl_idle(&r->up);
}

/* Runs until idle, answering every attempt OK. Bounded: each round delivers. */
static void drain(run *r) {
  for (int i = 0; i < 1000; i++) {
    if (r->inflight) finish(r, UPL_OK, 0);
    if (upl_idle(&r->up) && !r->inflight) return;
    if (!r->inflight) wl_run(&loop, -1, settled, r);
    check_upl(r);
  }
  die("the uploader did not settle");
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  const char *e = getenv("FUZZ_STRICT");
  (void)argc, (void)argv;
  strict = e && *e && strcmp(e, "0") != 0;
  if (wl_init(&loop) != 0 || wl_set_virtual(&loop, 1) != 0) die("wl_init");
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  run r;
  unsigned h;
  memset(&r, 0, sizeof r);
  r.in = (src){data, size};
  h = take(&r.in);
  r.ks = &keysets[h & 3];
  r.slots = (h >> 2) & 1;
  r.planned_at = -1;
  r.keys.n = 0;
  for (size_t i = 0; i < r.ks->n; i++)
    if (ps_keys_add(&r.keys, r.ks->k[i], strlen(r.ks->k[i])) != 0) die("ps_keys_add");
  if (wl_set_virtual(&loop, 1) != 0) die("loop not idle between inputs");
  wl_seed(&loop, take(&r.in));
  {
    ps_keys copy = {.n = 0};
    for (size_t i = 0; i < r.ks->n; i++) ps_keys_add(&copy, r.ks->k[i], strlen(r.ks->k[i]));
    upl_init(&r.up, &loop, &ops, &r, &copy);
  }
  {
    static const int64_t base[4] = {500, 0, 1, 100}, max[4] = {30000, 0, 1000, INT64_C(1000000000000)},
                         jitter[4] = {500, 0, 1, 10000};
    unsigned t = take(&r.in);
    r.up.base_ms = base[t & 3];
    r.up.max_ms = max[(t >> 2) & 3];
    r.up.jitter_ms = jitter[(t >> 4) & 3];
  }
  r.srv_batched = json_object();
  r.srv_each = json_object();

  while (r.in.n) {
    unsigned b = take(&r.in);
    switch (b % 8) {
    case 4: {
      upl_result res = (upl_result)((b >> 3) % 3);
      unsigned ra = res == UPL_RETRY ? take(&r.in) : 0;
      finish(&r, res, ra == 0xff ? INT64_C(1000000000000000) : (int64_t)ra * 37);
      break;
    }
    case 5: wl_run(&loop, wl_now(&loop) + (int64_t)take(&r.in) * 16, NULL, NULL); break;
    case 6: check_direct(&r, b >= 128); break;
    case 7:
      if (b == 0xff) {
        upl_close(&r.up);
        r.closed = 1;
        if (r.m_pending) r.lossy = 1;
        json_decref(r.m_pending);
        r.m_pending = NULL;
        if (!r.inflight && r.m_payload) {
          r.lossy = 1;
          json_decref(r.m_payload);
          r.m_payload = NULL;
        }
        r.planned_at = -1;
      } else {
        drain(&r);
      }
      break;
    default: enqueue(&r); break;
    }
    check_upl(&r);
  }
  check_direct(&r, 1);
  drain(&r);
  if (!r.closed && (r.m_pending || r.m_payload)) die("model not empty after the drain");
  if (strict && !r.lossy && !r.closed && !same_json(r.srv_batched, r.srv_each))
    die("FUZZ_STRICT: server state from the delivered payloads %s, from each patch %s",
        show(r.srv_batched), show(r.srv_each));

  upl_free(&r.up);
  wl_run(&loop, -1, NULL, NULL); /* nothing should be left; runs cancelled work if any */
  ps_keys_free(&r.keys);
  json_decref(r.m_pending);
  json_decref(r.m_payload);
  json_decref(r.srv_batched);
  json_decref(r.srv_each);
  return 0;
}
