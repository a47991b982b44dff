/* patch.c: see patch.h. */
#include "patch.h"

#include <stdlib.h>
#include <string.h>

void pt_keys_default(pt_keys *k) {
  k->n = 0;
  pt_keys_add(k, "external_metadata");
  pt_keys_add(k, "internal_metadata");
}

int pt_keys_add(pt_keys *k, const char *key) {
  char *dup;
  if (k->n == PT_MAX_KEYS || !(dup = strdup(key))) return -1;
  k->key[k->n++] = dup;
  return 0;
}

void pt_keys_free(pt_keys *k) {
  for (size_t i = 0; i < k->n; i++) free(k->key[i]);
  k->n = 0;
}

int pt_is_merge_key(const pt_keys *k, const char *key, size_t len) {
  for (size_t i = 0; i < k->n; i++)
    if (strncmp(k->key[i], key, len) == 0 && k->key[i][len] == '\0') return 1;
  return 0;
}

json_t *pt_merge_slot(json_t *base, const char *key, size_t len) {
  json_t *slot = json_object_getn(base, key, len);
  if (json_is_object(slot)) return slot;
  slot = json_object();
  if (!slot || json_object_setn_new_nocheck(base, key, len, slot) != 0) return NULL;
  return slot;
}

int pt_coalesce(json_t *base, const json_t *overlay, const pt_keys *k) {
  const char *key;
  size_t len;
  json_t *v;
  json_object_keylen_foreach((json_t *)overlay, key, len, v) {
    if (json_is_object(v) && pt_is_merge_key(k, key, len)) {
      json_t *slot = pt_merge_slot(base, key, len);
      if (!slot || json_object_update(slot, v) != 0) return -1;
    } else if (json_object_setn_nocheck(base, key, len, v) != 0) {
      return -1;
    }
  }
  return 0;
}
