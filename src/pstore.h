/* pstore.h: a compact, Lua-free store for JSON values, built for the uploader's
 * pending patch: overwriting an object key with a scalar or short string allocates
 * nothing, objects keep insertion order, and ps_encode writes compact JSON into one
 * growing buffer.
 *
 * Ownership: values are moved, never shared. A ps_val owns its heap string, array
 * or object. Functions that take a ps_val by value (ps_obj_set, ps_arr_push) move
 * it into the container, even when they fail (then it is freed). Pointers returned
 * by ps_obj_get, ps_arr_at, ps_str_of, ps_obj_next and ps_merge_slot are borrowed:
 * valid until the container they point into is next modified or freed. */
#ifndef WSUP_PSTORE_H
#define WSUP_PSTORE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define PS_INLINE 14   /* strings up to this many bytes live inside the ps_val */
#define PS_MAX_KEYS 16 /* merge keys per ps_keys */

typedef struct ps_obj ps_obj;
typedef struct ps_arr ps_arr;
typedef enum { PS_NULL, PS_FALSE, PS_TRUE, PS_INT, PS_REAL, PS_STR, PS_ARR, PS_OBJ } ps_type;

/* 16 bytes. Private layout: use the functions below. Both structs start with the
 * type tag (a common initial sequence), so x.s.type is always the type. */
typedef struct ps_val {
  union {
    struct { uint8_t type, len; char b[PS_INLINE]; } s; /* PS_STR of len <= PS_INLINE bytes */
    struct {
      uint8_t type, len; /* len > PS_INLINE: string in h */
      union { int64_t i; double d; struct ps_hstr *h; ps_arr *a; ps_obj *o; } u;
    } w;
  } x;
} ps_val;

/* ---- values ---------------------------------------------------------------- */

static inline ps_val ps_null(void) { ps_val v = {.x.w = {.type = PS_NULL}}; return v; }
static inline ps_val ps_bool(int b) { ps_val v = {.x.w = {.type = b ? PS_TRUE : PS_FALSE}}; return v; }
static inline ps_val ps_int(int64_t i) { ps_val v = {.x.w = {.type = PS_INT, .u.i = i}}; return v; }
/* Non-finite reals are not JSON: ps_encode and ps_to_json write them as null. */
static inline ps_val ps_real(double d) { ps_val v = {.x.w = {.type = PS_REAL, .u.d = d}}; return v; }
static inline ps_val ps_arr_val(ps_arr *a) { ps_val v = {.x.w = {.type = PS_ARR, .u.a = a}}; return v; }  /* takes a */
static inline ps_val ps_obj_val(ps_obj *o) { ps_val v = {.x.w = {.type = PS_OBJ, .u.o = o}}; return v; }  /* takes o */
static inline ps_type ps_typeof(const ps_val *v) { return (ps_type)v->x.s.type; }
static inline int64_t ps_int_of(const ps_val *v) { return v->x.s.type == PS_INT ? v->x.w.u.i : 0; }      /* 0 unless PS_INT */
static inline double ps_real_of(const ps_val *v) { return v->x.s.type == PS_REAL ? v->x.w.u.d : 0.0; }  /* 0 unless PS_REAL */
static inline ps_obj *ps_obj_of(const ps_val *v) { return v->x.s.type == PS_OBJ ? v->x.w.u.o : NULL; } /* borrowed */
static inline ps_arr *ps_arr_of(const ps_val *v) { return v->x.s.type == PS_ARR ? v->x.w.u.a : NULL; } /* borrowed */

ps_val ps_str(const char *s, size_t n);               /* copies n bytes (any bytes); PS_NULL when out of memory */
const char *ps_str_of(const ps_val *v, size_t *n);    /* borrowed bytes (not NUL-terminated), or NULL unless PS_STR */
void ps_free(ps_val *v);                              /* frees what v owns; v becomes PS_NULL */
int ps_copy(ps_val *dst, const ps_val *src);          /* deep copy into *dst (caller owns); 0, or -1 out of memory */

/* ---- objects: insertion-ordered hash tables --------------------------------- */

ps_obj *ps_obj_new(size_t hint);                      /* caller owns; room for hint keys; NULL out of memory */
void ps_obj_free(ps_obj *o);                          /* frees o, its keys and values; NULL is fine */
void ps_obj_clear(ps_obj *o);                         /* drops every key, keeps the memory for reuse */
size_t ps_obj_size(const ps_obj *o);
int ps_obj_set(ps_obj *o, const char *k, size_t kn, ps_val v); /* moves v; copies k; 0, or -1 out of memory (v freed) */
ps_val *ps_obj_get(const ps_obj *o, const char *k, size_t kn); /* borrowed, or NULL when absent */
/* Insertion order; *it starts at 0. Returns 1 with borrowed key and value, 0 at the end. */
int ps_obj_next(const ps_obj *o, size_t *it, const char **k, size_t *kn, const ps_val **v);

/* ---- arrays ----------------------------------------------------------------- */

ps_arr *ps_arr_new(size_t hint);                      /* caller owns; NULL out of memory */
void ps_arr_free(ps_arr *a);                          /* frees a and its values; NULL is fine */
int ps_arr_push(ps_arr *a, ps_val v);                 /* moves v; 0, or -1 out of memory (v freed) */
size_t ps_arr_len(const ps_arr *a);
const ps_val *ps_arr_at(const ps_arr *a, size_t i);   /* borrowed, or NULL when i >= length */

/* ---- coalescing --------------------------------------------------------------
 * Top-level keys: the newer value wins. Merge keys: when the newer value is an
 * object and the older one is too, merge one level deep (null values are kept, so
 * the server deletes those keys); otherwise the newer value replaces the older. */

typedef struct ps_keys {
  char *key[PS_MAX_KEYS]; /* owned copies */
  size_t len[PS_MAX_KEYS];
  size_t n;
} ps_keys;

int ps_keys_default(ps_keys *k);                      /* external_metadata, internal_metadata; 0, or -1 out of memory */
const ps_keys *ps_keys_defaults(void);                /* the same, shared and read-only */
int ps_keys_add(ps_keys *k, const char *key, size_t len); /* copies; 0, or -1 when full or out of memory */
void ps_keys_free(ps_keys *k);
int ps_is_merge_key(const ps_keys *k, const char *key, size_t len);

/* The object under base[k] that an object value merges into (borrowed). An absent
 * or non-object value is replaced by a fresh empty object. NULL out of memory
 * (base[k] may then be a new null). */
ps_obj *ps_merge_slot(ps_obj *base, const char *k, size_t kn);
/* Moves overlay's entries into base and frees overlay, always; O(size of overlay).
 * 0, or -1 out of memory (base then holds part of the overlay). */
int ps_coalesce(ps_obj *base, ps_obj *overlay, const ps_keys *keys);

/* ---- JSON ------------------------------------------------------------------- */

/* Compact JSON text of o, NUL-terminated, caller frees; *len (if len) gets its
 * length. Integers exact; reals as the shortest of %.15g/%.16g/%.17g that reads
 * back identically, with ".0" added to integral ones; strings escaped per RFC 8259
 * with bytes >= 0x80 copied (callers pass valid UTF-8). NULL out of memory. */
char *ps_encode(const ps_obj *o, size_t *len);
json_t *ps_to_json(const ps_val *v);                  /* new reference (caller owns), or NULL out of memory */
int ps_from_json(const json_t *j, ps_val *out);       /* *out (caller owns) from jansson; 0, or -1 out of memory */

#endif
