/* fuzz_json.c: pstore's JSON encoder and decoder, by round trip.
 *
 *   bytes -> json_loadb (any value, NUL allowed) -> ps_from_json -> ps_encode
 *         -> json_loadb -> same_json with the first (types, integers exact, reals bitwise)
 *
 * A value that is not an object is wrapped as {"v": value} (ps_encode takes
 * objects). Also checked: ps_encode output is valid UTF-8 JSON without duplicate
 * keys, its length is right, ps_to_json and ps_copy agree with it, ps_obj_get finds
 * every key (and no absent neighbour) at every level, an object emptied by
 * ps_obj_clear and refilled, or grown from an empty one, encodes as before, and two
 * direct probes that do not need the input to be JSON:
 *   - the input bytes as one string value: encoded, they must read back
 *     byte for byte whenever they are valid UTF-8;
 *   - the first 8 bytes as a double (when finite): it must read back as a real
 *     with the same bits. */
#include <math.h>

#include "common.h"
#include "pstore.h"

/* The input as one string: escaping of arbitrary bytes (NUL, controls, quotes). */
static void probe_string(const uint8_t *data, size_t size) {
  ps_obj *o = ps_obj_new(1);
  ps_val v = ps_str((const char *)data, size);
  json_t *j, *s;
  size_t n;
  char *text;
  if (!o || ps_typeof(&v) != PS_STR || ps_obj_set(o, "s", 1, v) != 0) die("out of memory");
  if (!utf8_ok(data, size)) { /* bytes >= 0x80 are copied: the encoding is as valid as they are */
    if (!(text = ps_encode(o, &n)) || strlen(text) != n) die("ps_encode of a non-UTF-8 string");
    free(text);
    ps_obj_free(o);
    return;
  }
  j = encode_parse(o, "string probe");
  s = json_object_get(j, "s");
  if (!json_is_string(s) || json_string_length(s) != size || memcmp(json_string_value(s), data, size) != 0)
    die("string probe: %zu bytes read back as %s", size, show(s));
  json_decref(j);
  ps_obj_free(o);
}

/* The first 8 bytes as a double: fmt_real's shortest form must read back exactly. */
static void probe_real(const uint8_t *data, size_t size) {
  double d, got;
  ps_obj *o;
  json_t *j, *x;
  if (size < 8) return;
  memcpy(&d, data, sizeof d);
  if (!isfinite(d)) return;
  if (!(o = ps_obj_new(1)) || ps_obj_set(o, "d", 1, ps_real(d)) != 0) die("out of memory");
  j = encode_parse(o, "real probe");
  x = json_object_get(j, "d");
  if (!json_is_real(x)) die("real probe: %a read back as %s", d, show(x));
  got = json_real_value(x);
  if (memcmp(&got, &d, sizeof d) != 0) die("real probe: %a (%.17g) read back as %a", d, d, got);
  json_decref(j);
  ps_obj_free(o);
}

/* Every key of j is found in o with an equal value, a key that is not there is not
 * found (probing on big objects with arbitrary keys), recursively. */
static void check_lookup(const ps_obj *o, const json_t *j) {
  const char *k;
  size_t kn;
  json_t *x;
  char miss[64];
  json_object_keylen_foreach((json_t *)j, k, kn, x) {
    const ps_val *v = ps_obj_get(o, k, kn);
    json_t *back;
    if (!v) die("ps_obj_get: key \"%s\" (%zu bytes) not found among %zu", k, kn, ps_obj_size(o));
    if (!(back = ps_to_json(v)) || !same_json(back, x)) die("ps_obj_get(\"%s\") = %s, want %s", k, show(back), show(x));
    json_decref(back);
    if (json_is_object(x)) check_lookup(ps_obj_of(v), x);
    if (kn < sizeof miss - 1) { /* k plus one byte, and k minus its last byte */
      memcpy(miss, k, kn);
      miss[kn] = '~';
      if (!json_object_getn(j, miss, kn + 1) && ps_obj_get(o, miss, kn + 1)) die("ps_obj_get found absent \"%.*s\"", (int)kn + 1, miss);
      if (kn && !json_object_getn(j, miss, kn - 1) && ps_obj_get(o, miss, kn - 1)) die("ps_obj_get found absent \"%.*s\"", (int)kn - 1, miss);
    }
  }
}

/* Empties o with ps_obj_clear and refills it from j (copies in jansson's order):
 * it must encode as before. */
static void check_clear_refill(ps_obj *o, const json_t *j, const char *before) {
  const char *k;
  size_t kn;
  json_t *x;
  char *after;
  ps_obj_clear(o);
  if (ps_obj_size(o) != 0) die("ps_obj_clear left %zu keys", ps_obj_size(o));
  json_object_keylen_foreach((json_t *)j, k, kn, x) {
    ps_val v;
    if (ps_obj_get(o, k, kn)) die("a cleared object still finds \"%s\"", k);
    if (ps_from_json(x, &v) != 0 || ps_obj_set(o, k, kn, v) != 0) die("out of memory");
  }
  if (!(after = ps_encode(o, NULL)) || strcmp(after, before) != 0) die("refilled after ps_obj_clear: %s, was %s", after, before);
  free(after);
}

/* The same keys inserted one by one into an object created without a size hint:
 * the index grows and rehashes all the way up. */
static void check_grow(const json_t *j, const char *before) {
  const char *k;
  size_t kn;
  json_t *x;
  char *after;
  ps_obj *o = ps_obj_new(0);
  if (!o) die("out of memory");
  json_object_keylen_foreach((json_t *)j, k, kn, x) {
    ps_val v;
    if (ps_from_json(x, &v) != 0 || ps_obj_set(o, k, kn, v) != 0) die("out of memory");
  }
  if (!(after = ps_encode(o, NULL)) || strcmp(after, before) != 0) die("grown from empty: %s, want %s", after, before);
  check_lookup(o, j);
  free(after);
  ps_obj_free(o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  json_error_t e;
  json_t *in, *wrapped, *back, *via;
  ps_val v, c;
  ps_obj *o;
  char *t1, *t2;

  probe_string(data, size);
  probe_real(data, size);

  if (!(in = json_loadb((const char *)data, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e))) return 0;
  if (json_is_object(in)) {
    wrapped = json_incref(in);
  } else {
    wrapped = json_object();
    json_object_set(wrapped, "v", in);
  }
  if (ps_from_json(wrapped, &v) != 0) die("ps_from_json failed");
  if (ps_typeof(&v) != PS_OBJ) die("ps_from_json of an object gave type %d", (int)ps_typeof(&v));
  o = ps_obj_of(&v);
  if (ps_obj_size(o) != json_object_size(wrapped)) die("ps_from_json: %zu keys, want %zu", ps_obj_size(o), json_object_size(wrapped));

  back = encode_parse(o, "round trip");
  if (!same_json(back, wrapped)) die("round trip: read %s, wrote %s", show(wrapped), show(back));

  via = ps_to_json(&v);
  if (!via || !same_json(via, wrapped)) die("ps_to_json: %s, want %s", show(via), show(wrapped));

  /* A deep copy encodes to the same text (same insertion order). */
  if (ps_copy(&c, &v) != 0) die("ps_copy failed");
  t1 = ps_encode(o, NULL);
  t2 = ps_encode(ps_obj_of(&c), NULL);
  if (!t1 || !t2 || strcmp(t1, t2) != 0) die("ps_copy encodes differently: %s vs %s", t1, t2);
  check_lookup(o, wrapped);
  check_clear_refill(ps_obj_of(&c), wrapped, t1);
  check_grow(wrapped, t1);
  free(t1);
  free(t2);
  ps_free(&c);

  ps_free(&v);
  json_decref(back);
  json_decref(via);
  json_decref(wrapped);
  json_decref(in);
  return 0;
}
