/* common.h: helpers shared by the fuzz targets (header-only; everything static).
 * Each target is one translation unit: fuzz/fuzz_<name>.c. */
#ifndef WSUP_FUZZ_COMMON_H
#define WSUP_FUZZ_COMMON_H

#include <jansson.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pstore.h"

/* A failed check: print why and abort, which libFuzzer records as a crash. */
__attribute__((format(printf, 1, 2), noreturn, unused)) static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("\n*** fuzz check failed: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputs("\n", stderr);
  va_end(ap);
  abort();
}

/* Compact text of j for messages (static buffer, truncated). */
__attribute__((unused)) static const char *show(const json_t *j) {
  static char out[8][2048];
  static int k;
  char *s = j ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS) : NULL;
  char *o = out[k++ & 7];
  snprintf(o, sizeof out[0], "%s", s ? s : "(none)");
  free(s);
  return o;
}

/* Input reader: past the end every byte reads as 0, so any input decodes. */
typedef struct src {
  const uint8_t *p;
  size_t n;
} src;

__attribute__((unused)) static unsigned take(src *s) {
  if (!s->n) return 0;
  s->n--;
  return *s->p++;
}

__attribute__((unused)) static uint64_t take64(src *s) {
  uint64_t x = 0;
  for (int i = 0; i < 8; i++) x = x << 8 | take(s);
  return x;
}

/* Strict RFC 3629 UTF-8: no overlongs, no surrogates, nothing above U+10FFFF. */
__attribute__((unused)) static int utf8_ok(const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned c = s[i], need, min, cp;
    if (c < 0x80) {
      i++;
      continue;
    }
    if (c >= 0xc2 && c <= 0xdf) need = 1, min = 0x80, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef) need = 2, min = 0x800, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4) need = 3, min = 0x10000, cp = c & 0x07;
    else return 0;
    if (n - i <= need) return 0;
    for (unsigned k = 1; k <= need; k++) {
      if ((s[i + k] & 0xc0) != 0x80) return 0;
      cp = cp << 6 | (s[i + k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    i += need + 1;
  }
  return 1;
}

/* Deep equality, stricter than json_equal: same types (1 is not 1.0), integers
 * exact, reals bitwise (so -0.0 differs from 0.0), strings byte for byte. */
__attribute__((unused)) static int same_json(const json_t *a, const json_t *b) {
  if (json_typeof(a) != json_typeof(b)) return 0;
  switch (json_typeof(a)) {
  case JSON_INTEGER: return json_integer_value(a) == json_integer_value(b);
  case JSON_REAL: {
    double x = json_real_value(a), y = json_real_value(b);
    return memcmp(&x, &y, sizeof x) == 0;
  }
  case JSON_STRING:
    return json_string_length(a) == json_string_length(b) &&
           memcmp(json_string_value(a), json_string_value(b), json_string_length(a)) == 0;
  case JSON_ARRAY:
    if (json_array_size(a) != json_array_size(b)) return 0;
    for (size_t i = 0; i < json_array_size(a); i++)
      if (!same_json(json_array_get(a, i), json_array_get(b, i))) return 0;
    return 1;
  case JSON_OBJECT: {
    const char *k;
    size_t kn;
    json_t *v, *w;
    if (json_object_size(a) != json_object_size(b)) return 0;
    json_object_keylen_foreach((json_t *)a, k, kn, v) {
      if (!(w = json_object_getn(b, k, kn)) || !same_json(v, w)) return 0;
    }
    return 1;
  }
  default: return 1; /* true, false, null */
  }
}

/* Parses text that wsup wrote: it must be one valid JSON value, with no duplicate
 * keys (\u0000 allowed: strings may hold NUL bytes). */
__attribute__((unused)) static json_t *parse_out(const char *text, size_t n, const char *what) {
  json_error_t e;
  json_t *j;
  if (!utf8_ok((const unsigned char *)text, n)) die("%s: not valid UTF-8: %.*s", what, (int)n, text);
  if (!(j = json_loadb(text, n, JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES, &e)))
    die("%s: not valid JSON (%s at byte %d): %.*s", what, e.text, e.position, (int)n, text);
  return j;
}

/* ps_encode(o), checked (its length is the text's) and parsed back by parse_out. */
__attribute__((unused)) static json_t *encode_parse(const ps_obj *o, const char *what) {
  size_t n = 0;
  char *text = ps_encode(o, &n);
  json_t *j;
  if (!text) die("%s: ps_encode failed", what);
  if (strlen(text) != n) die("%s: ps_encode length %zu, text %zu", what, n, strlen(text));
  j = parse_out(text, n, what);
  free(text);
  return j;
}

/* Merge keys as C strings (no NUL inside) with a membership test. */
typedef struct keyset {
  const char *const *k;
  size_t n;
} keyset;

__attribute__((unused)) static int in_keys(const keyset *ks, const char *k) {
  for (size_t i = 0; i < ks->n; i++)
    if (strcmp(ks->k[i], k) == 0) return 1;
  return 0;
}

/* Reference coalescing (README "Coalescing"), on jansson values, independent of
 * pstore: top-level keys: the newer value wins; under a merge key, when both values
 * are objects, members merge one level deep and nulls stay; otherwise replace.
 * base is modified; patch is only read (deep copies go in). */
__attribute__((unused)) static void ref_coalesce(json_t *base, const json_t *patch, const keyset *ks) {
  const char *k, *ik;
  json_t *v, *iv, *old;
  json_object_foreach((json_t *)patch, k, v) {
    old = json_object_get(base, k);
    if (in_keys(ks, k) && json_is_object(v) && json_is_object(old)) {
      json_object_foreach(v, ik, iv) json_object_set_new(old, ik, json_deep_copy(iv));
    } else {
      json_object_set_new(base, k, json_deep_copy(v));
    }
  }
}

/* Reference server fold (README "The reference receiver"), independent of
 * rcv_fold: keys replace; an object under a merge key merges one level deep into
 * the stored object (a fresh one if the stored value is not an object) and a null
 * member deletes. */
__attribute__((unused)) static void ref_server_fold(json_t *state, const json_t *patch, const keyset *ks) {
  const char *k, *ik;
  json_t *v, *iv, *dst;
  json_object_foreach((json_t *)patch, k, v) {
    if (in_keys(ks, k) && json_is_object(v)) {
      if (!json_is_object(dst = json_object_get(state, k))) json_object_set_new(state, k, dst = json_object());
      json_object_foreach(v, ik, iv) {
        if (json_is_null(iv)) json_object_del(dst, ik);
        else json_object_set_new(dst, ik, json_deep_copy(iv));
      }
    } else {
      json_object_set_new(state, k, json_deep_copy(v));
    }
  }
}

#endif
