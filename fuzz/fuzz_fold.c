/* fuzz_fold.c: the receiver's pure fold, rcv_fold(state, patch).
 *
 * Input: byte 0 picks the merge keys (default, none, {"a"}, {"", "a",
 * "external_metadata"}); the rest is "STATE\0PATCH[\0PATCH2]", each part a JSON text
 * (a part that does not parse is {}). Checked after rcv_fold:
 *   - non-objects are refused (-1) and leave state unchanged;
 *   - state equals the reference fold (common.h ref_server_fold) of the old state;
 *   - state is an object; keys absent from the patch are unchanged; non-merge keys
 *     (and merge keys with a non-object value) equal the patch's value; a merge key
 *     with an object value holds an object with none of the patch's null members,
 *     and no nulls at all when the old value held none;
 *   - state shares nothing with the patch (every value in it has one reference, and
 *     it still compares equal once the patch is freed);
 *   - folding the same patch again changes nothing.
 * FUZZ_STRICT=1 also checks fold(fold(s, P), P2) == fold(s, coalesce(P, P2)) with
 * pstore's coalescing: the server should not see a difference between patches sent
 * one by one and coalesced (fuzz/README.md, finding F1). */
#include "common.h"
#include "pstore.h"
#include "receiver.h"

static const char *const keys_default[] = {"external_metadata", "internal_metadata"};
static const char *const keys_a[] = {"a"};
static const char *const keys_mixed[] = {"", "a", "external_metadata"};
static const keyset keysets[4] = {{keys_default, 2}, {NULL, 0}, {keys_a, 1}, {keys_mixed, 3}};
static int strict;

static json_t *part(const uint8_t **p, size_t *n) {
  const uint8_t *end = memchr(*p, 0, *n);
  size_t len = end ? (size_t)(end - *p) : *n;
  json_t *j = json_loadb((const char *)*p, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
  *p += len + (end != NULL);
  *n -= len + (end != NULL);
  return j ? j : json_object();
}

static int has_null_member(const json_t *o) {
  const char *k;
  json_t *v;
  if (!json_is_object(o)) return 0;
  json_object_foreach((json_t *)o, k, v) if (json_is_null(v)) return 1;
  return 0;
}

/* Every value below j (j included) is referenced once: nothing is shared. */
static void check_unshared(const json_t *j, const char *where) {
  const char *k;
  json_t *v;
  if (json_is_null(j) || json_is_true(j) || json_is_false(j)) return; /* static singletons */
  if (j->refcount != 1) die("%s: a value with %zu references: %s", where, j->refcount, show(j));
  if (json_is_object(j)) json_object_foreach((json_t *)j, k, v) check_unshared(v, where);
  if (json_is_array(j))
    for (size_t i = 0; i < json_array_size(j); i++) check_unshared(json_array_get(j, i), where);
}

static void check_fold(json_t *state, json_t *patch, const keyset *ks) {
  json_t *old = json_deep_copy(state), *want = json_deep_copy(state), *again;
  const char *k, *ik;
  json_t *v, *iv, *got;
  int rc = rcv_fold(state, patch, ks->k, ks->n);
  if (!json_is_object(old) || !json_is_object(patch)) {
    if (rc != -1) die("rcv_fold accepted a non-object: state %s patch %s", show(old), show(patch));
    if (!same_json(state, old)) die("a refused fold changed state to %s", show(state));
    goto out;
  }
  if (rc != 0) die("rcv_fold failed on state %s patch %s", show(old), show(patch));
  ref_server_fold(want, patch, ks);
  if (!same_json(state, want))
    die("rcv_fold(%s, %s) = %s, reference %s", show(old), show(patch), show(state), show(want));
  json_object_foreach(state, k, v) {
    if (!json_object_get(patch, k) && !same_json(v, json_object_get(old, k))) die("key \"%s\" not in the patch changed", k);
  }
  json_object_foreach(patch, k, v) {
    got = json_object_get(state, k);
    if (!got) die("key \"%s\" of the patch missing from state", k);
    if (in_keys(ks, k) && json_is_object(v)) {
      if (!json_is_object(got)) die("merge key \"%s\": %s is not an object", k, show(got));
      json_object_foreach(v, ik, iv) {
        json_t *m = json_object_get(got, ik);
        if (json_is_null(iv) ? m != NULL : !m || !same_json(m, iv)) die("merge key \"%s\" member \"%s\": %s", k, ik, show(m));
      }
      if (!has_null_member(json_object_get(old, k)) && has_null_member(got)) die("merge key \"%s\" holds a null: %s", k, show(got));
    } else if (!same_json(got, v)) {
      die("key \"%s\": %s, patch has %s", k, show(got), show(v));
    }
  }
  check_unshared(state, "state after rcv_fold");
  again = json_deep_copy(state);
  if (rcv_fold(again, patch, ks->k, ks->n) != 0 || !same_json(again, state)) die("folding twice differs: %s", show(again));
  json_decref(again);
out:
  json_decref(old);
  json_decref(want);
}

/* STRICT: fold(fold(s, a), b) against fold(s, coalesce(a, b)). */
static void check_coalesced(const json_t *s0, const json_t *a, const json_t *b, const keyset *ks) {
  json_t *seq = json_deep_copy(s0), *one = json_deep_copy(s0), *cj;
  ps_keys keys = {.n = 0};
  ps_val va, vb;
  for (size_t i = 0; i < ks->n; i++) ps_keys_add(&keys, ks->k[i], strlen(ks->k[i]));
  if (ps_from_json(a, &va) != 0 || ps_from_json(b, &vb) != 0) die("ps_from_json failed");
  if (ps_coalesce(ps_obj_of(&va), ps_obj_of(&vb), &keys) != 0) die("ps_coalesce failed");
  cj = encode_parse(ps_obj_of(&va), "coalesced");
  if (rcv_fold(seq, a, ks->k, ks->n) != 0 || rcv_fold(seq, b, ks->k, ks->n) != 0 || rcv_fold(one, cj, ks->k, ks->n) != 0)
    die("rcv_fold failed");
  if (!same_json(seq, one))
    die("FUZZ_STRICT: state %s, patches %s then %s give %s; coalesced %s gives %s", show(s0), show(a), show(b),
        show(seq), show(cj), show(one));
  ps_free(&va);
  ps_keys_free(&keys);
  json_decref(cj);
  json_decref(seq);
  json_decref(one);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  const char *e = getenv("FUZZ_STRICT");
  (void)argc, (void)argv;
  strict = e && *e && strcmp(e, "0") != 0;
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const keyset *ks;
  json_t *state, *patch, *patch2, *s0, *p1, *after;
  if (size < 1) return 0;
  ks = &keysets[data[0] & 3];
  data++, size--;
  state = part(&data, &size);
  patch = part(&data, &size);
  patch2 = size ? part(&data, &size) : NULL;
  s0 = json_deep_copy(state);
  p1 = json_deep_copy(patch);

  check_fold(state, patch, ks);
  /* The patch may go now: state must not depend on it. */
  after = json_deep_copy(state);
  json_decref(patch);
  if (!same_json(state, after)) die("state changed when the patch was freed");
  json_decref(after);
  if (patch2) {
    check_fold(state, patch2, ks);
    if (strict && json_is_object(s0) && json_is_object(p1) && json_is_object(patch2))
      check_coalesced(s0, p1, patch2, ks);
  }
  json_decref(s0);
  json_decref(p1);
  json_decref(state);
  json_decref(patch2);
  return 0;
}
