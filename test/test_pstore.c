/* test_pstore.c — pstore: objects, arrays, strings, copies, coalescing, JSON text. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pstore.h"
#include "ps_text.h"

/* ---- helpers ---------------------------------------------------------------- */


/* Compares contents (jansson: order-blind) and then text (insertion order). */
static void assert_obj(const ps_obj *o, const char *want_text) {
  ps_val v = ps_obj_val((ps_obj *)o); /* a view: not freed */
  json_t *got = ps_to_json(&v), *want = js(want_text);
  char *text = ps_encode(o, NULL);
  assert_non_null(got);
  if (!json_equal(got, want)) fail_msg("got %s, want %s", text, want_text);
  assert_string_equal(text, want_text);
  free(text);
  json_decref(got);
  json_decref(want);
}

static char *encode_one(ps_val v) {
  ps_obj *o = ps_obj_new(0);
  char *t;
  assert_int_equal(ps_obj_set(o, "a", 1, v), 0);
  t = ps_encode(o, NULL);
  ps_obj_free(o);
  return t;
}

static int inside(const void *p, const void *base, size_t n) {
  return (const char *)p >= (const char *)base && (const char *)p < (const char *)base + n;
}

/* ---- values and objects ----------------------------------------------------- */

static void test_value_size(void **st) {
  (void)st;
  assert_int_equal(sizeof(ps_val), 16);
  ps_val v = ps_int(-5);
  assert_int_equal(ps_typeof(&v), PS_INT);
  assert_int_equal(ps_int_of(&v), -5);
  v = ps_real(2.5);
  assert_true(ps_real_of(&v) == 2.5);
  assert_int_equal(ps_int_of(&v), 0);
  v = ps_bool(7);
  assert_int_equal(ps_typeof(&v), PS_TRUE);
  v = ps_bool(0);
  assert_int_equal(ps_typeof(&v), PS_FALSE);
}

static void test_set_get_overwrite(void **st) {
  (void)st;
  ps_obj *o = ps_obj_new(0);
  size_t n;
  assert_null(ps_obj_get(o, "a", 1));
  assert_int_equal(ps_obj_set(o, "a", 1, ps_int(1)), 0);
  assert_int_equal(ps_obj_set(o, "b", 1, ps_str("x", 1)), 0);
  assert_int_equal(ps_obj_size(o), 2);
  assert_int_equal(ps_int_of(ps_obj_get(o, "a", 1)), 1);
  assert_int_equal(ps_obj_set(o, "a", 1, ps_str("a long string value", 19)), 0);
  assert_int_equal(ps_obj_size(o), 2);
  assert_memory_equal(ps_str_of(ps_obj_get(o, "a", 1), &n), "a long string value", 19);
  assert_int_equal(n, 19);
  assert_int_equal(ps_obj_set(o, "a", 1, ps_null()), 0);
  assert_int_equal(ps_typeof(ps_obj_get(o, "a", 1)), PS_NULL);
  assert_null(ps_obj_get(o, "ab", 2));
  assert_null(ps_obj_get(o, "", 0));
  /* heap parts for clear to free (a leak shows under valgrind / ASan) */
  assert_int_equal(ps_obj_set(o, "a long key, kept on the heap", 28, ps_obj_val(ps_obj_new(0))), 0);
  assert_int_equal(ps_obj_set(o, "a", 1, ps_str("a long string value", 19)), 0);
  ps_obj_clear(o);
  assert_int_equal(ps_obj_size(o), 0);
  assert_null(ps_obj_get(o, "b", 1));
  assert_int_equal(ps_obj_set(o, "b", 1, ps_int(9)), 0);
  assert_obj(o, "{\"b\":9}");
  ps_obj_free(o);
}

static void test_grow_10000(void **st) {
  (void)st;
  ps_obj *o = ps_obj_new(0);
  char k[32];
  for (int pass = 0; pass < 2; pass++)
    for (int i = 0; i < 10000; i++) {
      int n = snprintf(k, sizeof k, "key%d", i);
      assert_int_equal(ps_obj_set(o, k, (size_t)n, ps_int(i * (pass + 1))), 0);
      assert_int_equal(ps_obj_size(o), pass ? 10000 : (size_t)i + 1);
    }
  for (int i = 0; i < 10000; i++) {
    int n = snprintf(k, sizeof k, "key%d", i);
    ps_val *v = ps_obj_get(o, k, (size_t)n);
    assert_non_null(v);
    assert_int_equal(ps_int_of(v), 2 * i);
  }
  assert_null(ps_obj_get(o, "key10000", 8));
  size_t it = 0, kn, i = 0;
  const char *key;
  const ps_val *v;
  while (ps_obj_next(o, &it, &key, &kn, &v)) {
    int n = snprintf(k, sizeof k, "key%zu", i);
    assert_int_equal(kn, (size_t)n);
    assert_memory_equal(key, k, kn);
    assert_int_equal(ps_int_of(v), 2 * (int64_t)i);
    i++;
  }
  assert_int_equal(i, 10000);
  ps_obj_free(o);
}

/* Every size from 1 to 20 keys (across the first growths of entries and index), with
 * and without a size hint, with inline and heap keys: every key is found, order is
 * kept, overwrites stay in place, and a cleared object is reusable. */
static void test_every_small_size_finds_orders_and_overwrites(void **st) {
  (void)st;
  char k[64];
  for (int size = 1; size <= 20; size++) {
    for (int hint = 0; hint <= 8; hint += 8) {
      ps_obj *o = ps_obj_new((size_t)hint);
      for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < size; i++) {
          int n = snprintf(k, sizeof k, i % 3 == 2 ? "a-key-longer-than-twenty-bytes-%d" : "k%d", i);
          assert_int_equal(ps_obj_set(o, k, (size_t)n, ps_int(i + 100 * pass)), 0);
        }
      assert_int_equal(ps_obj_size(o), (size_t)size);
      for (int i = 0; i < size; i++) {
        int n = snprintf(k, sizeof k, i % 3 == 2 ? "a-key-longer-than-twenty-bytes-%d" : "k%d", i);
        ps_val *v = ps_obj_get(o, k, (size_t)n);
        assert_non_null(v);
        assert_int_equal(ps_int_of(v), i + 100);
      }
      assert_null(ps_obj_get(o, "k99", 3));
      assert_null(ps_obj_get(o, "", 0));
      size_t it = 0, kn, i = 0;
      const char *key;
      const ps_val *v;
      while (ps_obj_next(o, &it, &key, &kn, &v)) assert_int_equal(ps_int_of(v), (int64_t)(i++) + 100);
      assert_int_equal(i, (size_t)size);
      ps_obj_clear(o);
      assert_int_equal(ps_obj_size(o), 0);
      assert_null(ps_obj_get(o, "k0", 2));
      assert_int_equal(ps_obj_set(o, "k0", 2, ps_int(7)), 0);
      assert_int_equal(ps_int_of(ps_obj_get(o, "k0", 2)), 7);
      ps_obj_free(o);
    }
  }
}

/* Many keys that differ only in 4 bytes placed so that each word-compare path
 * (8, 12 and 24 bytes) must look at them: 32-bit hash collisions among 2^18 keys
 * are nearly certain, so the full key comparison must tell them apart. */
static void test_colliding_hashes(void **st) {
  (void)st;
  const size_t pre[] = {4, 8, 8}, post[] = {0, 0, 12}, n = (size_t)1 << 18;
  char k[24];
  memset(k, 'p', sizeof k);
  for (size_t c = 0; c < sizeof pre / sizeof *pre; c++) {
    ps_obj *o = ps_obj_new(0);
    size_t len = pre[c] + 4 + post[c];
    for (uint32_t i = 0; i < n; i++) {
      memcpy(k + pre[c], &i, 4);
      assert_int_equal(ps_obj_set(o, k, len, ps_int(i)), 0);
    }
    assert_int_equal(ps_obj_size(o), n);
    for (uint32_t i = 0; i < n; i++) {
      memcpy(k + pre[c], &i, 4);
      assert_int_equal(ps_int_of(ps_obj_get(o, k, len)), i);
    }
    ps_obj_free(o);
  }
}

static void test_order_kept_on_overwrite(void **st) {
  (void)st;
  ps_obj *o = ps_obj_new(4);
  assert_int_equal(ps_obj_set(o, "c", 1, ps_int(1)), 0);
  assert_int_equal(ps_obj_set(o, "a", 1, ps_int(2)), 0);
  assert_int_equal(ps_obj_set(o, "b", 1, ps_int(3)), 0);
  assert_int_equal(ps_obj_set(o, "a", 1, ps_str("new", 3)), 0);
  assert_int_equal(ps_obj_set(o, "c", 1, ps_bool(1)), 0);
  assert_obj(o, "{\"c\":true,\"a\":\"new\",\"b\":3}");
  ps_obj_free(o);
}

static const size_t lens[] = {0, 1, 14, 15, 16, 20, 21, 100};

/* Bytes with a NUL in the middle, distinct per length and per variant. */
static void fill(char *b, size_t n, char variant) {
  for (size_t i = 0; i < n; i++) b[i] = (char)('a' + (i * 7 + (size_t)variant) % 26);
  if (n > 1) b[n / 2] = '\0';
}

static void test_strings_inline_and_heap(void **st) {
  (void)st;
  char b[128];
  for (size_t i = 0; i < sizeof lens / sizeof *lens; i++) {
    size_t n = lens[i], got;
    fill(b, n, 0);
    ps_val v = ps_str(b, n);
    const char *s = ps_str_of(&v, &got);
    assert_int_equal(ps_typeof(&v), PS_STR);
    assert_int_equal(got, n);
    assert_memory_equal(s, b, n);
    assert_int_equal(inside(s, &v, sizeof v), n <= 14); /* inline iff short */
    b[0] ^= 1; /* ps_str copied */
    if (n) assert_int_not_equal(ps_str_of(&v, &got)[0], b[0]);
    ps_free(&v);
    assert_int_equal(ps_typeof(&v), PS_NULL);
  }
  ps_val x = ps_int(3);
  size_t n = 99;
  assert_null(ps_str_of(&x, &n));
}

static void test_keys_inline_and_heap(void **st) {
  (void)st;
  ps_obj *o = ps_obj_new(0);
  char b[128], c[128];
  size_t nl = sizeof lens / sizeof *lens;
  for (size_t i = 0; i < nl; i++) {
    fill(b, lens[i], 0);
    assert_int_equal(ps_obj_set(o, b, lens[i], ps_int((int64_t)i)), 0);
  }
  assert_int_equal(ps_obj_size(o), nl);
  for (size_t i = 0; i < nl; i++) {
    fill(b, lens[i], 0);
    assert_int_equal(ps_int_of(ps_obj_get(o, b, lens[i])), (int64_t)i);
    if (lens[i] > 1) { /* differs only after the NUL: another key */
      memcpy(c, b, lens[i]);
      c[lens[i] - 1] ^= 1;
      assert_null(ps_obj_get(o, c, lens[i]));
    }
  }
  size_t it = 0, kn, i = 0;
  const char *k;
  const ps_val *v;
  while (ps_obj_next(o, &it, &k, &kn, &v)) {
    fill(b, lens[i], 0);
    assert_int_equal(kn, lens[i]);
    assert_memory_equal(k, b, kn);
    i++;
  }
  assert_int_equal(i, nl);
  ps_obj_free(o);
}

static void test_arrays(void **st) {
  (void)st;
  ps_arr *a = ps_arr_new(0), *inner = ps_arr_new(2);
  assert_int_equal(ps_arr_push(inner, ps_str("inner string, heap", 18)), 0);
  for (int i = 0; i < 1000; i++)
    assert_int_equal(ps_arr_push(a, i % 2 ? ps_int(i) : ps_str("s", 1)), 0);
  assert_int_equal(ps_arr_push(a, ps_arr_val(inner)), 0);
  assert_int_equal(ps_arr_len(a), 1001);
  assert_int_equal(ps_int_of(ps_arr_at(a, 999)), 999);
  assert_int_equal(ps_typeof(ps_arr_at(a, 998)), PS_STR);
  assert_ptr_equal(ps_arr_of(ps_arr_at(a, 1000)), inner);
  assert_null(ps_arr_at(a, 1001));
  ps_obj *o = ps_obj_new(0);
  assert_int_equal(ps_obj_set(o, "a", 1, ps_arr_val(a)), 0);
  char *t = ps_encode(o, NULL);
  assert_memory_equal(t, "{\"a\":[\"s\",1,\"s\",3,", 18);
  assert_non_null(strstr(t, ",997,\"s\",999,[\"inner string, heap\"]]}"));
  free(t);
  ps_obj_free(o);
}

static void test_deep_copy_independent(void **st) {
  (void)st;
  const char *text = "{\"s\":\"a string longer than fourteen\",\"o\":{\"x\":[1,{\"y\":\"zz\"}]},\"n\":null}";
  ps_obj *o = ps_text(text);
  ps_val orig = ps_obj_val(o), copy;
  assert_int_equal(ps_copy(&copy, &orig), 0);
  assert_ptr_not_equal(ps_obj_of(&copy), o);
  /* Change the original at every level, then free it: the copy must not move. */
  ps_obj *inner = ps_obj_of(ps_obj_get(o, "o", 1));
  ps_arr *arr = ps_arr_of(ps_obj_get(inner, "x", 1));
  assert_int_equal(ps_obj_set(ps_obj_of(ps_arr_at(arr, 1)), "y", 1, ps_int(0)), 0);
  assert_int_equal(ps_arr_push(arr, ps_int(2)), 0);
  assert_int_equal(ps_obj_set(o, "s", 1, ps_int(1)), 0);
  assert_obj(ps_obj_of(&copy), text);
  ps_free(&orig);
  assert_obj(ps_obj_of(&copy), text);
  ps_free(&copy);
}

/* ---- coalescing ------------------------------------------------------------- */

static void coalesce_case(const char *base, const char *overlay, const char *want) {
  ps_keys k;
  ps_obj *b = ps_text(base);
  assert_int_equal(ps_keys_default(&k), 0);
  assert_int_equal(ps_coalesce(b, ps_text(overlay), &k), 0);
  assert_obj(b, want);
  ps_obj_free(b);
  ps_keys_free(&k);
}

static void test_coalesce_last_wins(void **st) {
  (void)st;
  coalesce_case("{\"a\":1,\"b\":\"x\"}", "{\"a\":2,\"c\":true}", "{\"a\":2,\"b\":\"x\",\"c\":true}");
  coalesce_case("{}", "{\"a\":[1,2]}", "{\"a\":[1,2]}");
  coalesce_case("{\"a\":[1,2]}", "{}", "{\"a\":[1,2]}");
}

static void test_coalesce_merge_one_level(void **st) {
  (void)st;
  coalesce_case("{\"external_metadata\":{\"x\":1,\"y\":2},\"w\":1}",
                "{\"external_metadata\":{\"y\":null,\"z\":3}}",
                "{\"external_metadata\":{\"x\":1,\"y\":null,\"z\":3},\"w\":1}");
  coalesce_case("{\"internal_metadata\":{\"a\":{\"p\":1},\"b\":2}}", "{\"internal_metadata\":{\"a\":{\"q\":2}}}",
                "{\"internal_metadata\":{\"a\":{\"q\":2},\"b\":2}}");
}

static void test_coalesce_replaces(void **st) {
  (void)st;
  /* a non-object replaces a merge key's object */
  coalesce_case("{\"external_metadata\":{\"x\":1}}", "{\"external_metadata\":\"s\"}", "{\"external_metadata\":\"s\"}");
  coalesce_case("{\"external_metadata\":{\"x\":1}}", "{\"external_metadata\":[1]}", "{\"external_metadata\":[1]}");
  coalesce_case("{\"external_metadata\":{\"x\":1}}", "{\"external_metadata\":null}", "{\"external_metadata\":null}");
  /* an object under a non-merge key replaces */
  coalesce_case("{\"other\":{\"x\":1}}", "{\"other\":{\"y\":2}}", "{\"other\":{\"y\":2}}");
  /* an object under a merge key whose base value is not an object */
  coalesce_case("{\"external_metadata\":\"s\",\"z\":0}", "{\"external_metadata\":{\"x\":1}}",
                "{\"external_metadata\":{\"x\":1},\"z\":0}");
  coalesce_case("{}", "{\"external_metadata\":{\"x\":1}}", "{\"external_metadata\":{\"x\":1}}");
}

static void test_coalesce_custom_keys(void **st) {
  (void)st;
  ps_keys k = {0};
  ps_obj *b = ps_text("{\"external_metadata\":{\"x\":1},\"m\":{\"x\":1}}");
  assert_int_equal(ps_keys_add(&k, "m", 1), 0);
  assert_true(ps_is_merge_key(&k, "m", 1));
  assert_false(ps_is_merge_key(&k, "mm", 2));
  assert_false(ps_is_merge_key(&k, "external_metadata", 17));
  assert_int_equal(ps_coalesce(b, ps_text("{\"external_metadata\":{\"y\":2},\"m\":{\"y\":2}}"), &k), 0);
  assert_obj(b, "{\"external_metadata\":{\"y\":2},\"m\":{\"x\":1,\"y\":2}}");
  ps_obj_free(b);
  for (int i = 1; i < PS_MAX_KEYS; i++) assert_int_equal(ps_keys_add(&k, "k", 1), 0);
  assert_int_equal(ps_keys_add(&k, "k", 1), -1);
  ps_keys_free(&k);
  assert_int_equal(ps_keys_default(&k), 0);
  assert_true(ps_is_merge_key(&k, "external_metadata", 17));
  assert_true(ps_is_merge_key(&k, "internal_metadata", 17));
  assert_false(ps_is_merge_key(&k, "external_metadat", 16));
  ps_keys_free(&k);
}

static void test_merge_slot(void **st) {
  (void)st;
  ps_obj *b = ps_text("{\"s\":\"str\",\"o\":{\"x\":1}}");
  ps_obj *o = ps_obj_of(ps_obj_get(b, "o", 1));
  assert_ptr_equal(ps_merge_slot(b, "o", 1), o);
  ps_obj *s = ps_merge_slot(b, "s", 1);
  assert_non_null(s);
  assert_int_equal(ps_obj_size(s), 0);
  ps_obj *n = ps_merge_slot(b, "new", 3);
  assert_int_equal(ps_obj_set(n, "k", 1, ps_int(1)), 0);
  assert_ptr_equal(ps_merge_slot(b, "new", 3), n);
  assert_obj(b, "{\"s\":{},\"o\":{\"x\":1},\"new\":{\"k\":1}}");
  ps_obj_free(b);
}

/* ---- JSON text -------------------------------------------------------------- */

static void check_int(int64_t x, const char *want) {
  char *t = encode_one(ps_int(x));
  assert_string_equal(t, want);
  json_t *j = js(t);
  assert_true(json_is_integer(json_object_get(j, "a")));
  assert_true(json_integer_value(json_object_get(j, "a")) == x);
  json_decref(j);
  free(t);
}

static void test_encode_ints(void **st) {
  (void)st;
  check_int(INT64_MAX, "{\"a\":9223372036854775807}");
  check_int(INT64_MIN, "{\"a\":-9223372036854775808}");
  check_int(123456789012345678, "{\"a\":123456789012345678}");
  check_int(0, "{\"a\":0}");
  check_int(-7, "{\"a\":-7}");
}

/* Encodes d; checks the text (when given) and that both jansson and strtod read
 * back the identical double, as a real. */
static void check_real(double d, const char *want) {
  char *t = encode_one(ps_real(d));
  size_t n = strlen(t);
  if (want) assert_string_equal(t, want);
  assert_true(n > 6 && t[n - 1] == '}');
  t[n - 1] = '\0';
  double back = strtod(t + 5, NULL);
  assert_memory_equal(&back, &d, sizeof d);
  t[n - 1] = '}';
  json_t *j = js(t);
  json_t *x = json_object_get(j, "a");
  assert_true(json_is_real(x));
  back = json_real_value(x);
  assert_memory_equal(&back, &d, sizeof d);
  json_decref(j);
  free(t);
}

static void test_encode_reals(void **st) {
  (void)st;
  check_real(0.1, "{\"a\":0.1}");
  check_real(1.0, "{\"a\":1.0}");
  check_real(-2.0, "{\"a\":-2.0}");
  check_real(0.0, "{\"a\":0.0}");
  check_real(-0.0, "{\"a\":-0.0}");
  check_real(1e300, "{\"a\":1e+300}");
  check_real(1e15, "{\"a\":1e+15}");
  check_real(999999999999999.0, "{\"a\":999999999999999.0}");
  check_real(1.5, "{\"a\":1.5}");
  check_real(5e-324, NULL);
  check_real(DBL_MAX, NULL);
  check_real(-DBL_MAX, NULL);
  check_real(DBL_MIN, NULL);
  check_real(1.0 / 3, NULL);
  check_real(0.1 + 0.2, "{\"a\":0.30000000000000004}");
  check_real(9007199254740993.0, NULL);
  uint64_t bits = 0x123456789abcdefull;
  for (int i = 0; i < 2000; i++) { /* many bit patterns */
    double d;
    bits = bits * 6364136223846793005ull + 1442695040888963407ull;
    memcpy(&d, &bits, sizeof d);
    if (isfinite(d)) check_real(d, NULL);
  }
  char *t = encode_one(ps_real(NAN));
  assert_string_equal(t, "{\"a\":null}");
  free(t);
}

static void test_encode_escapes(void **st) {
  (void)st;
  const char in[] = "q\"b\\n\nr\rt\tb\bf\f\x01\x1f\x7f/\xc3\xa9\xe2\x82\xac";
  char *t = encode_one(ps_str(in, sizeof in - 1));
  assert_string_equal(t, "{\"a\":\"q\\\"b\\\\n\\nr\\rt\\tb\\bf\\f\\u0001\\u001f\x7f/\xc3\xa9\xe2\x82\xac\"}");
  free(t);
  t = encode_one(ps_str("a\0b", 3));
  assert_string_equal(t, "{\"a\":\"a\\u0000b\"}");
  free(t);
  ps_obj *o = ps_obj_new(0);
  assert_int_equal(ps_obj_set(o, "k\"\n", 3, ps_null()), 0);
  t = ps_encode(o, NULL);
  assert_string_equal(t, "{\"k\\\"\\n\":null}");
  free(t);
  ps_obj_free(o);
  /* Every escapable byte at every position of a long string: the word-at-a-time
   * scan must not skip one. */
  char s[40];
  for (int c = 0; c < 256; c++)
    for (size_t pos = 0; pos < sizeof s; pos++) {
      memset(s, 'x', sizeof s);
      s[pos] = (char)c;
      if (c >= 0x80) s[pos] = 'y'; /* keep it UTF-8 */
      t = encode_one(ps_str(s, sizeof s));
      json_t *j = js(t), *x = json_object_get(j, "a");
      assert_int_equal(json_string_length(x), sizeof s);
      assert_memory_equal(json_string_value(x), s, sizeof s);
      int escaped = c < 0x20 || c == '"' || c == '\\';
      assert_int_equal(strlen(t), 8 + sizeof s + (escaped ? (strchr("\"\\\n\r\t\b\f", c) && c ? 1 : 5) : 0));
      json_decref(j);
      free(t);
    }
}

/* Deterministic random values: every type, keys and strings with escapes and UTF-8. */
static uint64_t rnd(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

static void rnd_text(uint64_t *s, char *b, size_t *n) {
  static const char *const parts[] = {"a", "Z", "0", " ", "\"", "\\", "\n", "\x01", "\xc3\xa9", "\xf0\x9f\x98\x80", "/", "\x7f"};
  size_t len = rnd(s) % 24;
  *n = 0;
  for (size_t i = 0; i < len; i++) {
    const char *p = parts[rnd(s) % (sizeof parts / sizeof *parts)];
    memcpy(b + *n, p, strlen(p));
    *n += strlen(p);
  }
}

static ps_val rnd_val(uint64_t *s, int depth) {
  char b[128];
  size_t n;
  double d;
  uint64_t bits;
  switch (rnd(s) % (depth > 3 ? 6 : 8)) {
  case 0: return ps_null();
  case 1: return ps_bool((int)(rnd(s) & 1));
  case 2: return ps_int((int64_t)rnd(s) >> (rnd(s) % 64));
  case 3:
    bits = rnd(s);
    memcpy(&d, &bits, sizeof d);
    return ps_real(isfinite(d) ? d : (double)(int64_t)bits / 1000.0);
  case 4:
  case 5: rnd_text(s, b, &n); return ps_str(b, n);
  case 6: {
    ps_arr *a = ps_arr_new(0);
    for (uint64_t i = rnd(s) % 6; i > 0; i--) assert_int_equal(ps_arr_push(a, rnd_val(s, depth + 1)), 0);
    return ps_arr_val(a);
  }
  default: {
    ps_obj *o = ps_obj_new(0);
    for (uint64_t i = rnd(s) % 6; i > 0; i--) {
      rnd_text(s, b, &n);
      assert_int_equal(ps_obj_set(o, b, n, rnd_val(s, depth + 1)), 0);
    }
    return ps_obj_val(o);
  }
  }
}

static void test_encode_matches_to_json(void **st) {
  (void)st;
  uint64_t seed = 88172645463325252ull;
  for (int round = 0; round < 300; round++) {
    ps_obj *o = ps_obj_new(0);
    char k[16];
    for (int i = 0; i < 8; i++) {
      snprintf(k, sizeof k, "k%d", i);
      assert_int_equal(ps_obj_set(o, k, strlen(k), rnd_val(&seed, 0)), 0);
    }
    ps_val v = ps_obj_val(o);
    size_t len;
    char *t = ps_encode(o, &len);
    assert_int_equal(strlen(t), len);
    json_t *parsed = js(t), *direct = ps_to_json(&v);
    if (!json_equal(parsed, direct)) fail_msg("round %d: %s", round, t);
    /* and back: jansson -> pstore -> text is the same text */
    ps_val again;
    assert_int_equal(ps_from_json(parsed, &again), 0);
    char *t2 = ps_encode(ps_obj_of(&again), NULL);
    assert_string_equal(t2, t);
    free(t2);
    ps_free(&again);
    json_decref(parsed);
    json_decref(direct);
    free(t);
    ps_free(&v);
  }
}

static void test_from_json_round_trip(void **st) {
  (void)st;
  const char *text = "{\"z\":1,\"a\":[true,false,null,-1,0.5,\"s\",[],{}],\"m\":{\"q\":\"a\\u0000b\",\"e\":1e+300},"
                     "\"long key with more than twenty bytes\":\"and a value longer than fourteen\"}";
  json_t *j = js(text);
  ps_val v;
  assert_int_equal(ps_from_json(j, &v), 0);
  json_t *back = ps_to_json(&v);
  assert_true(json_equal(j, back));
  assert_obj(ps_obj_of(&v), text); /* order and text kept too */
  json_t *n = json_integer(5);
  ps_val x;
  assert_int_equal(ps_from_json(n, &x), 0);
  assert_int_equal(ps_int_of(&x), 5);
  json_decref(n);
  json_decref(back);
  json_decref(j);
  ps_free(&v);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_value_size),
      cmocka_unit_test(test_set_get_overwrite),
      cmocka_unit_test(test_grow_10000),
      cmocka_unit_test(test_every_small_size_finds_orders_and_overwrites),
      cmocka_unit_test(test_colliding_hashes),
      cmocka_unit_test(test_order_kept_on_overwrite),
      cmocka_unit_test(test_strings_inline_and_heap),
      cmocka_unit_test(test_keys_inline_and_heap),
      cmocka_unit_test(test_arrays),
      cmocka_unit_test(test_deep_copy_independent),
      cmocka_unit_test(test_coalesce_last_wins),
      cmocka_unit_test(test_coalesce_merge_one_level),
      cmocka_unit_test(test_coalesce_replaces),
      cmocka_unit_test(test_coalesce_custom_keys),
      cmocka_unit_test(test_merge_slot),
      cmocka_unit_test(test_encode_ints),
      cmocka_unit_test(test_encode_reals),
      cmocka_unit_test(test_encode_escapes),
      cmocka_unit_test(test_encode_matches_to_json),
      cmocka_unit_test(test_from_json_round_trip),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
