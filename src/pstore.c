/* pstore.c: see pstore.h.
 *
 * Objects are an entry array in insertion order plus an open-addressing index of
 * {hash, entry number} slots (linear probing, power-of-two size, at most half
 * full). Keys are never deleted one by one, so there are no tombstones. */
#include "pstore.h"

#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bytes.h"

#define KEY_INLINE 20    /* keys up to this long live in the entry */
#define HEAP_LEN 0xff    /* ps_val len of a heap string */

struct ps_hstr {
  size_t n;
  char b[];
};

/* 40 bytes. A heap key's pointer is stored in kb (memcpy: kb is unaligned). */
typedef struct ent {
  ps_val v;
  uint32_t klen;
  char kb[KEY_INLINE];
} ent;

typedef struct slot {
  uint32_t hash;
  uint32_t idx; /* entry number + 1; 0 marks an empty slot */
} slot;

struct ps_obj {
  ent *e;        /* n used, cap allocated */
  slot *s;       /* 2 * cap slots, or NULL while cap is 0 */
  uint32_t n, cap;
};

struct ps_arr {
  ps_val *v;
  size_t n, cap;
};

_Static_assert(sizeof(ps_val) == 16, "ps_val should stay two words");
_Static_assert(sizeof(ent) == 40, "entry layout");

/* ---- values ---------------------------------------------------------------- */

/* The n <= PS_INLINE bytes at s built in two registers: storing them bytewise and
 * returning the struct stalls on store forwarding (a quarter of an enqueue). The
 * loads overlap instead of reading past s + n. */
static ps_val short_str(const char *s, size_t n) {
  uint64_t a = 0, b = 0, w[2];
  ps_val v;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  if (n >= 8) {
    a = bytes_load64(s);
    if (n > 8) b = bytes_load64(s + n - 8) >> (8 * (16 - n));
  } else if (n >= 4) {
    a = bytes_load32(s) | bytes_load32(s + n - 4) << (8 * (n - 4));
  } else if (n) {
    a = (uint64_t)(uint8_t)s[0] | (uint64_t)(uint8_t)s[n / 2] << (8 * (n / 2)) |
        (uint64_t)(uint8_t)s[n - 1] << (8 * (n - 1));
  }
  w[0] = PS_STR | (uint64_t)n << 8 | a << 16;
  w[1] = a >> 48 | b << 16;
  memcpy(&v, w, sizeof v);
#else
  (void)a, (void)b, (void)w;
  v = (ps_val){.x.s = {.type = PS_STR, .len = (uint8_t)n}};
  if (n) memcpy(v.x.s.b, s, n);
#endif
  return v;
}

ps_val ps_str(const char *s, size_t n) {
  ps_val v = {.x.w = {.type = PS_STR, .len = HEAP_LEN}};
  struct ps_hstr *h;
  if (n <= PS_INLINE) return short_str(s, n);
  if (n > SIZE_MAX - sizeof *h - 1 || !(h = malloc(sizeof *h + n + 1))) return ps_null();
  h->n = n;
  memcpy(h->b, s, n);
  h->b[n] = '\0'; /* not relied on; helps debuggers */
  v.x.w.u.h = h;
  return v;
}

const char *ps_str_of(const ps_val *v, size_t *n) {
  if (v->x.s.type != PS_STR) return NULL;
  if (v->x.s.len <= PS_INLINE) {
    *n = v->x.s.len;
    return v->x.s.b;
  }
  *n = v->x.w.u.h->n;
  return v->x.w.u.h->b;
}

/* Whether freeing v has anything to release: the hot overwrite path skips the call. */
static inline int owns_heap(const ps_val *v) {
  return v->x.s.type == PS_STR ? v->x.s.len > PS_INLINE : v->x.s.type > PS_STR;
}

void ps_free(ps_val *v) {
  switch (v->x.s.type) {
  case PS_STR:
    if (v->x.s.len > PS_INLINE) free(v->x.w.u.h);
    break;
  case PS_ARR:
    ps_arr_free(v->x.w.u.a);
    break;
  case PS_OBJ:
    ps_obj_free(v->x.w.u.o);
    break;
  default:
    return; /* scalars own nothing */
  }
  *v = ps_null();
}

static int copy_arr(ps_val *dst, const ps_arr *src) {
  ps_arr *a = ps_arr_new(src->n);
  if (!a) return -1;
  for (size_t i = 0; i < src->n; i++) {
    ps_val c;
    if (ps_copy(&c, &src->v[i]) != 0 || ps_arr_push(a, c) != 0) {
      ps_arr_free(a);
      return -1;
    }
  }
  *dst = ps_arr_val(a);
  return 0;
}

static int copy_obj(ps_val *dst, const ps_obj *src) {
  ps_obj *o = ps_obj_new(src->n);
  const char *k;
  size_t kn, it = 0;
  const ps_val *v;
  if (!o) return -1;
  while (ps_obj_next(src, &it, &k, &kn, &v)) {
    ps_val c;
    if (ps_copy(&c, v) != 0 || ps_obj_set(o, k, kn, c) != 0) {
      ps_obj_free(o);
      return -1;
    }
  }
  *dst = ps_obj_val(o);
  return 0;
}

int ps_copy(ps_val *dst, const ps_val *src) {
  const char *s;
  size_t n;
  switch (src->x.s.type) {
  case PS_STR:
    s = ps_str_of(src, &n);
    *dst = ps_str(s, n);
    return dst->x.s.type == PS_STR ? 0 : -1;
  case PS_ARR:
    return copy_arr(dst, src->x.w.u.a);
  case PS_OBJ:
    return copy_obj(dst, src->x.w.u.o);
  default:
    *dst = *src;
    return 0;
  }
}

/* ---- objects ---------------------------------------------------------------- */

/* Folded 64x64->128 multiply: the mixing step of wyhash. */
static inline uint64_t mix(uint64_t a, uint64_t b) {
#ifdef __SIZEOF_INT128__
  unsigned __int128 r = (unsigned __int128)a * b;
  return (uint64_t)r ^ (uint64_t)(r >> 64);
#else
  uint64_t r = a * (b | 1);
  return r ^ (r >> 29) ^ (a >> 32) * (b >> 32);
#endif
}

/* A wyhash-style hash: keys come from our own worker, not an adversary, so the
 * latency on short keys matters more than DoS resistance. Up to 16 bytes cost two
 * multiplies; the loads overlap instead of looping per byte. */
static inline uint32_t hash(const char *k, size_t n) {
  const uint64_t s0 = 0xa0761d6478bd642full, s1 = 0xe7037ed1a0b428dbull;
  uint64_t seed = s0 ^ n, a = 0, b = 0;
  if (n > 16) {
    for (; n > 16; k += 16, n -= 16) seed = mix(bytes_load64(k) ^ s1, bytes_load64(k + 8) ^ seed);
    k -= 16 - n; /* the last 16 bytes, overlapping what the loop took */
    n = 16;
  }
  if (n >= 8) {
    a = bytes_load64(k);
    b = bytes_load64(k + n - 8);
  } else if (n >= 4) {
    a = bytes_load32(k) << 32 | bytes_load32(k + n - 4);
  } else if (n) {
    a = (uint64_t)(uint8_t)k[0] << 16 | (uint64_t)(uint8_t)k[n / 2] << 8 | (uint8_t)k[n - 1];
  }
  return (uint32_t)mix(s1 ^ n, mix(a ^ s1, b ^ seed));
}

/* memcmp(a, b, n) == 0 without a libc call for the short keys we mostly see. */
static inline int same_bytes(const char *a, const char *b, size_t n) {
  if (n < 4) return n == 0 || (a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1]);
  if (n <= 8) return bytes_load32(a) == bytes_load32(b) && bytes_load32(a + n - 4) == bytes_load32(b + n - 4);
  if (n <= 16) return bytes_load64(a) == bytes_load64(b) && bytes_load64(a + n - 8) == bytes_load64(b + n - 8);
  if (n <= 24)
    return bytes_load64(a) == bytes_load64(b) && bytes_load64(a + 8) == bytes_load64(b + 8) && bytes_load64(a + n - 8) == bytes_load64(b + n - 8);
  return memcmp(a, b, n) == 0;
}

static inline const char *key_of(const ent *e) {
  const char *p;
  if (e->klen <= KEY_INLINE) return e->kb;
  memcpy(&p, e->kb, sizeof p);
  return p;
}

/* The entry number + 1 holding k, or 0 with *pos set to the empty slot where k
 * would go. The index is never full, so the probe ends. */
static inline uint32_t probe(const ps_obj *o, const char *k, uint32_t kn, uint32_t h, uint32_t *pos) {
  uint32_t mask = 2 * o->cap - 1;
  for (uint32_t i = h & mask;; i = (i + 1) & mask) {
    slot s = o->s[i];
    if (!s.idx) {
      *pos = i;
      return 0;
    }
    if (s.hash == h) {
      const ent *e = &o->e[s.idx - 1];
      if (e->klen == kn && same_bytes(key_of(e), k, kn)) return s.idx;
    }
  }
}

/* Room for `want` entries: entries and index double together, so the index stays
 * at most half full and probes stay short. The old index supplies the hashes. */
static int grow(ps_obj *o, size_t want) {
  uint32_t cap = o->cap ? o->cap : 4;
  ent *e;
  slot *s;
  if (want > UINT32_MAX / 4) return -1;
  while (cap < want) cap *= 2;
  if (!(e = realloc(o->e, cap * sizeof *e))) return -1;
  o->e = e; /* a larger block with o->cap unchanged is still consistent */
  if (!(s = calloc(2 * (size_t)cap, sizeof *s))) return -1;
  for (uint32_t i = 0; o->cap && i < 2 * o->cap; i++) {
    uint32_t j = o->s[i].hash & (2 * cap - 1);
    if (!o->s[i].idx) continue;
    while (s[j].idx) j = (j + 1) & (2 * cap - 1);
    s[j] = o->s[i];
  }
  free(o->s);
  o->s = s;
  o->cap = cap;
  return 0;
}

ps_obj *ps_obj_new(size_t hint) {
  ps_obj *o = calloc(1, sizeof *o);
  if (o && hint && grow(o, hint) != 0) {
    ps_obj_free(o);
    return NULL;
  }
  return o;
}

static void drop_entries(ps_obj *o) {
  for (uint32_t i = 0; i < o->n; i++) {
    ps_free(&o->e[i].v);
    if (o->e[i].klen > KEY_INLINE) free((void *)key_of(&o->e[i]));
  }
  o->n = 0;
}

void ps_obj_free(ps_obj *o) {
  if (!o) return;
  drop_entries(o);
  free(o->e);
  free(o->s);
  free(o);
}

void ps_obj_clear(ps_obj *o) {
  drop_entries(o);
  if (o->cap) memset(o->s, 0, 2 * (size_t)o->cap * sizeof *o->s);
}

size_t ps_obj_size(const ps_obj *o) { return o->n; }

ps_val *ps_obj_get(const ps_obj *o, const char *k, size_t kn) {
  uint32_t pos, idx;
  if (!o->n || kn > UINT32_MAX) return NULL;
  idx = probe(o, k, (uint32_t)kn, hash(k, kn), &pos);
  return idx ? &o->e[idx - 1].v : NULL;
}

/* Appends k with a PS_NULL value; pos is its empty slot unless the index grows. */
static ps_val *add(ps_obj *o, const char *k, uint32_t kn, uint32_t h, uint32_t pos) {
  ent *e;
  char *heap;
  if (o->n == o->cap) {
    if (grow(o, (size_t)o->n + 1) != 0) return NULL;
    probe(o, k, kn, h, &pos);
  }
  e = &o->e[o->n];
  if (kn <= KEY_INLINE) {
    if (kn) memcpy(e->kb, k, kn);
  } else {
    if (!(heap = malloc(kn))) return NULL;
    memcpy(heap, k, kn);
    memcpy(e->kb, &heap, sizeof heap);
  }
  e->klen = kn;
  e->v = ps_null();
  o->s[pos] = (slot){h, ++o->n};
  return &e->v;
}

/* The value under k, or a new PS_NULL entry for it; NULL out of memory. */
static inline ps_val *value_at(ps_obj *o, const char *k, size_t kn) {
  uint32_t h, pos = 0, idx;
  if (kn > UINT32_MAX) return NULL;
  h = hash(k, kn);
  if (o->cap && (idx = probe(o, k, (uint32_t)kn, h, &pos))) return &o->e[idx - 1].v;
  return add(o, k, (uint32_t)kn, h, pos);
}

int ps_obj_set(ps_obj *o, const char *k, size_t kn, ps_val v) {
  ps_val *p = value_at(o, k, kn);
  if (!p) {
    ps_free(&v);
    return -1;
  }
  if (owns_heap(p)) ps_free(p);
  *p = v;
  return 0;
}

int ps_obj_next(const ps_obj *o, size_t *it, const char **k, size_t *kn, const ps_val **v) {
  const ent *e;
  if (*it >= o->n) return 0;
  e = &o->e[(*it)++];
  *k = key_of(e);
  *kn = e->klen;
  *v = &e->v;
  return 1;
}

/* ---- arrays ----------------------------------------------------------------- */

static int arr_reserve(ps_arr *a, size_t want) {
  size_t cap = a->cap ? a->cap : 4;
  ps_val *v;
  if (want <= a->cap) return 0;
  while (cap < want) {
    if (cap > SIZE_MAX / 2 / sizeof *v) return -1;
    cap *= 2;
  }
  if (!(v = realloc(a->v, cap * sizeof *v))) return -1;
  a->v = v;
  a->cap = cap;
  return 0;
}

ps_arr *ps_arr_new(size_t hint) {
  ps_arr *a = calloc(1, sizeof *a);
  if (a && arr_reserve(a, hint) != 0) {
    free(a);
    return NULL;
  }
  return a;
}

void ps_arr_free(ps_arr *a) {
  if (!a) return;
  for (size_t i = 0; i < a->n; i++) ps_free(&a->v[i]);
  free(a->v);
  free(a);
}

int ps_arr_push(ps_arr *a, ps_val v) {
  if (a->n == a->cap && arr_reserve(a, a->n + 1) != 0) {
    ps_free(&v);
    return -1;
  }
  a->v[a->n++] = v;
  return 0;
}

size_t ps_arr_len(const ps_arr *a) { return a->n; }

const ps_val *ps_arr_at(const ps_arr *a, size_t i) { return i < a->n ? &a->v[i] : NULL; }

/* ---- coalescing ------------------------------------------------------------- */

int ps_keys_default(ps_keys *k) {
  k->n = 0;
  if (ps_keys_add(k, "external_metadata", 17) == 0 && ps_keys_add(k, "internal_metadata", 17) == 0)
    return 0;
  ps_keys_free(k);
  return -1;
}

const ps_keys *ps_keys_defaults(void) {
  static const ps_keys defaults = {{(char *)"external_metadata", (char *)"internal_metadata"}, {17, 17}, 2};
  return &defaults;
}

int ps_keys_add(ps_keys *k, const char *key, size_t len) {
  char *dup;
  if (k->n == PS_MAX_KEYS || len == SIZE_MAX || !(dup = malloc(len + 1))) return -1;
  memcpy(dup, key, len);
  dup[len] = '\0';
  k->key[k->n] = dup;
  k->len[k->n++] = len;
  return 0;
}

void ps_keys_free(ps_keys *k) {
  for (size_t i = 0; i < k->n; i++) free(k->key[i]);
  k->n = 0;
}

int ps_is_merge_key(const ps_keys *k, const char *key, size_t len) {
  for (size_t i = 0; i < k->n; i++)
    if (k->len[i] == len && same_bytes(k->key[i], key, len)) return 1;
  return 0;
}

ps_obj *ps_merge_slot(ps_obj *base, const char *k, size_t kn) {
  ps_val *p = value_at(base, k, kn);
  ps_obj *o;
  if (!p) return NULL;
  if (p->x.s.type == PS_OBJ) return p->x.w.u.o;
  if (!(o = ps_obj_new(0))) return NULL;
  ps_free(p);
  *p = ps_obj_val(o);
  return o;
}

static int absorb(ps_obj *dst, ps_obj *src, const ps_keys *keys);

/* base[k] = v, merging one level when both are objects. Moves v. */
static int merge_into(ps_obj *base, const char *k, size_t kn, ps_val v) {
  ps_val *old = ps_obj_get(base, k, kn);
  /* Moving the whole object gives what merging into a fresh one would, in O(1). */
  if (!old || old->x.s.type != PS_OBJ) return ps_obj_set(base, k, kn, v);
  return absorb(old->x.w.u.o, v.x.w.u.o, NULL);
}

/* Moves src's entries into dst (merging under keys, if any), then frees src. */
static int absorb(ps_obj *dst, ps_obj *src, const ps_keys *keys) {
  int rc = 0;
  for (uint32_t i = 0; i < src->n; i++) {
    ent *e = &src->e[i];
    ps_val v = e->v;
    e->v = ps_null();
    if (rc != 0) ps_free(&v);
    else if (keys && v.x.s.type == PS_OBJ && ps_is_merge_key(keys, key_of(e), e->klen))
      rc = merge_into(dst, key_of(e), e->klen, v);
    else
      rc = ps_obj_set(dst, key_of(e), e->klen, v);
  }
  ps_obj_free(src);
  return rc;
}

int ps_coalesce(ps_obj *base, ps_obj *overlay, const ps_keys *keys) { return absorb(base, overlay, keys); }

/* ---- JSON text -------------------------------------------------------------- */

typedef struct buf {
  char *p;
  size_t n, cap;
} buf;

static int buf_grow(buf *b, size_t more) {
  size_t cap = b->cap ? b->cap : 256;
  char *p;
  while (cap - b->n < more) {
    if (cap > SIZE_MAX / 2) return -1;
    cap *= 2;
  }
  if (!(p = realloc(b->p, cap))) return -1;
  b->p = p;
  b->cap = cap;
  return 0;
}

/* Ensures `more` free bytes; the check inlines, the growth does not. */
static inline int room(buf *b, size_t more) { return b->cap - b->n >= more ? 0 : buf_grow(b, more); }

/* Bytes at the start of s that JSON strings take as they are. Eight at a time:
 * the SWAR tests never miss a byte < 0x20, '"' or '\\' in a word. */
static size_t plain_run(const char *s, size_t n) {
  const uint64_t ones = 0x0101010101010101ull, highs = ones * 0x80;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w, q, bs;
    memcpy(&w, s + i, 8);
    q = w ^ (ones * '"');
    bs = w ^ (ones * '\\');
    if (((w - ones * 0x20) | (q - ones) | (bs - ones)) & ~w & highs) break;
  }
  for (; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x20 || c == '"' || c == '\\') break;
  }
  return i;
}

static void put_escape(buf *b, unsigned char c) {
  static const char hex[] = "0123456789abcdef";
  char e = c == '"' || c == '\\' ? (char)c : c == '\n' ? 'n' : c == '\r' ? 'r' : c == '\t' ? 't'
         : c == '\b' ? 'b' : c == '\f' ? 'f' : 0;
  b->p[b->n++] = '\\';
  if (e) {
    b->p[b->n++] = e;
    return;
  }
  memcpy(b->p + b->n, "u00", 3);
  b->p[b->n + 3] = hex[c >> 4];
  b->p[b->n + 4] = hex[c & 15];
  b->n += 5;
}

static int put_str(buf *b, const char *s, size_t n) {
  if (room(b, n + 2) != 0) return -1;
  b->p[b->n++] = '"';
  for (size_t i = 0;;) {
    size_t run = plain_run(s + i, n - i);
    memcpy(b->p + b->n, s + i, run);
    b->n += run;
    if ((i += run) == n) break;
    /* keep room for the rest unescaped plus the quote */
    if (room(b, 6 + (n - i) + 1) != 0) return -1;
    put_escape(b, (unsigned char)s[i++]);
  }
  b->p[b->n++] = '"';
  return 0;
}

static size_t fmt_int(char *out, int64_t x) {
  char t[20], *p = t + sizeof t;
  uint64_t u = x < 0 ? 0 - (uint64_t)x : (uint64_t)x;
  size_t n = 0;
  do *--p = (char)('0' + u % 10);
  while (u /= 10);
  if (x < 0) out[n++] = '-';
  memcpy(out + n, p, (size_t)(t + sizeof t - p));
  return n + (size_t)(t + sizeof t - p);
}

/* At most 32 bytes. snprintf/strtod are slow, so integral values skip them
 * (below 1e15 %.15g prints them in full, so the text is the same). */
static size_t fmt_real(char *out, double d) {
  size_t n;
  if (!isfinite(d)) {
    memcpy(out, "null", 4);
    return 4;
  }
  if (d == 0 || (fabs(d) < 1e15 && d == trunc(d))) {
    n = signbit(d) && d == 0 ? (out[0] = '-', 1 + fmt_int(out + 1, 0)) : fmt_int(out, (int64_t)d);
  } else {
    for (int prec = 15; prec <= 17; prec++) {
      snprintf(out, 32, "%.*g", prec, d);
      if (strtod(out, NULL) == d) break;
    }
    n = strlen(out);
    /* snprintf and strtod agree on LC_NUMERIC's decimal point, which JSON does not: put '.'
     * in its place (it may be several bytes, as U+066B in ps_AF). */
    const char *dp = localeconv()->decimal_point;
    size_t dn = strlen(dp);
    char *at = dn && strcmp(dp, ".") != 0 ? strstr(out, dp) : NULL;
    if (at) {
      *at = '.';
      memmove(at + 1, at + dn, n - (size_t)(at - out) - dn + 1);
      n -= dn - 1;
    }
    if (strpbrk(out, ".e")) return n;
  }
  memcpy(out + n, ".0", 2);
  return n + 2;
}

static int put_val(buf *b, const ps_val *v);

static int put_obj(buf *b, const ps_obj *o) {
  if (room(b, 2) != 0) return -1;
  b->p[b->n++] = '{';
  for (uint32_t i = 0; i < o->n; i++) {
    if (i) b->p[b->n++] = ','; /* room: put_val leaves one spare byte */
    if (put_str(b, key_of(&o->e[i]), o->e[i].klen) != 0 || room(b, 1) != 0) return -1;
    b->p[b->n++] = ':';
    if (put_val(b, &o->e[i].v) != 0) return -1;
  }
  b->p[b->n++] = '}';
  return 0;
}

static int put_arr(buf *b, const ps_arr *a) {
  if (room(b, 2) != 0) return -1;
  b->p[b->n++] = '[';
  for (size_t i = 0; i < a->n; i++) {
    if (i) b->p[b->n++] = ',';
    if (put_val(b, &a->v[i]) != 0) return -1;
  }
  b->p[b->n++] = ']';
  return 0;
}

/* Writes v and leaves at least one free byte for the caller's ',' or '}'. */
static int put_val(buf *b, const ps_val *v) {
  const char *s;
  size_t n;
  int rc = 0;
  if (room(b, 34) != 0) return -1;
  switch (v->x.s.type) {
  case PS_NULL: memcpy(b->p + b->n, "null", 4), b->n += 4; break;
  case PS_FALSE: memcpy(b->p + b->n, "false", 5), b->n += 5; break;
  case PS_TRUE: memcpy(b->p + b->n, "true", 4), b->n += 4; break;
  case PS_INT: b->n += fmt_int(b->p + b->n, v->x.w.u.i); break;
  case PS_REAL: b->n += fmt_real(b->p + b->n, v->x.w.u.d); break;
  case PS_STR: s = ps_str_of(v, &n), rc = put_str(b, s, n); break;
  case PS_ARR: rc = put_arr(b, v->x.w.u.a); break;
  default: rc = put_obj(b, v->x.w.u.o); break;
  }
  return rc != 0 ? rc : room(b, 1);
}

char *ps_encode(const ps_obj *o, size_t *len) {
  buf b = {NULL, 0, 0};
  if (buf_grow(&b, 64 + (size_t)o->n * 16) != 0 || put_obj(&b, o) != 0 || room(&b, 1) != 0) {
    free(b.p);
    return NULL;
  }
  b.p[b.n] = '\0';
  if (len) *len = b.n;
  return b.p;
}

/* ---- jansson ---------------------------------------------------------------- */

static json_t *obj_to_json(const ps_obj *o) {
  json_t *j = json_object();
  for (uint32_t i = 0; j && i < o->n; i++) {
    json_t *x = ps_to_json(&o->e[i].v);
    if (!x || json_object_setn_new_nocheck(j, key_of(&o->e[i]), o->e[i].klen, x) != 0) {
      json_decref(j);
      return NULL;
    }
  }
  return j;
}

json_t *ps_to_json(const ps_val *v) {
  const char *s;
  size_t n;
  json_t *j;
  switch (v->x.s.type) {
  case PS_NULL: return json_null();
  case PS_FALSE: return json_false();
  case PS_TRUE: return json_true();
  case PS_INT: return json_integer((json_int_t)v->x.w.u.i);
  case PS_REAL: return isfinite(v->x.w.u.d) ? json_real(v->x.w.u.d) : json_null();
  case PS_STR: s = ps_str_of(v, &n); return json_stringn_nocheck(s, n);
  case PS_ARR:
    j = json_array();
    for (size_t i = 0; j && i < v->x.w.u.a->n; i++) {
      if (json_array_append_new(j, ps_to_json(&v->x.w.u.a->v[i])) != 0) {
        json_decref(j);
        return NULL;
      }
    }
    return j;
  default: return obj_to_json(v->x.w.u.o);
  }
}

static int obj_from_json(const json_t *j, ps_val *out) {
  ps_obj *o = ps_obj_new(json_object_size(j));
  const char *k;
  size_t kn;
  json_t *x;
  if (!o) return -1;
  json_object_keylen_foreach((json_t *)j, k, kn, x) {
    ps_val v;
    if (ps_from_json(x, &v) != 0 || ps_obj_set(o, k, kn, v) != 0) {
      ps_obj_free(o);
      return -1;
    }
  }
  *out = ps_obj_val(o);
  return 0;
}

static int arr_from_json(const json_t *j, ps_val *out) {
  ps_arr *a = ps_arr_new(json_array_size(j));
  if (!a) return -1;
  for (size_t i = 0; i < json_array_size(j); i++) {
    ps_val v;
    if (ps_from_json(json_array_get(j, i), &v) != 0 || ps_arr_push(a, v) != 0) {
      ps_arr_free(a);
      return -1;
    }
  }
  *out = ps_arr_val(a);
  return 0;
}

int ps_from_json(const json_t *j, ps_val *out) {
  switch (json_typeof(j)) {
  case JSON_OBJECT: return obj_from_json(j, out);
  case JSON_ARRAY: return arr_from_json(j, out);
  case JSON_STRING:
    *out = ps_str(json_string_value(j), json_string_length(j));
    return out->x.s.type == PS_STR ? 0 : -1;
  case JSON_INTEGER: *out = ps_int((int64_t)json_integer_value(j)); return 0;
  case JSON_REAL: *out = ps_real(json_real_value(j)); return 0;
  case JSON_TRUE: *out = ps_bool(1); return 0;
  case JSON_FALSE: *out = ps_bool(0); return 0;
  default: *out = ps_null(); return 0;
  }
}
