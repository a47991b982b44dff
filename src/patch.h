/* patch.h: coalescing of PUT /worker patches held as jansson objects. Lua-free.
 *
 * Top-level keys: the newer value wins. Merge keys: when the newer value is an
 * object and the older one is too, merge one level deep (null values are kept, so
 * the server deletes those keys); otherwise the newer value replaces the older. */
#ifndef WSUP_PATCH_H
#define WSUP_PATCH_H

#include <jansson.h>
#include <stddef.h>

#define PT_MAX_KEYS 16

typedef struct pt_keys {
  char *key[PT_MAX_KEYS]; /* owned copies */
  size_t n;
} pt_keys;

void pt_keys_default(pt_keys *k);            /* external_metadata, internal_metadata */
int pt_keys_add(pt_keys *k, const char *key); /* 0, or -1 when full or out of memory */
void pt_keys_free(pt_keys *k);
int pt_is_merge_key(const pt_keys *k, const char *key, size_t len);

/* The object under base[key] that an object value merges into. When base[key]
 * is absent or not an object, a fresh empty object takes its place. Borrowed. */
json_t *pt_merge_slot(json_t *base, const char *key, size_t len);

/* Coalesces overlay into base in place; O(size of overlay). base keeps references
 * to overlay's values, which are never mutated later: merge slots are always fresh
 * objects owned by one patch. Returns 0, or -1 when out of memory. */
int pt_coalesce(json_t *base, const json_t *overlay, const pt_keys *k);

#endif
