/* ps_text.h: test helpers shared by the store and uploader tests: JSON text in,
 * jansson or store values out. Include after cmocka.h. */
#ifndef WSUP_TEST_PS_TEXT_H
#define WSUP_TEST_PS_TEXT_H

#include <jansson.h>

#include "pstore.h"

/* Parses text (NUL bytes allowed) or fails the test; caller owns the result. */
static json_t *js(const char *text) {
  json_error_t e;
  json_t *v = json_loads(text, JSON_ALLOW_NUL, &e);
  if (!v) fail_msg("bad JSON %s: %s", text, e.text);
  return v;
}

/* A store object from JSON text that must be an object; caller owns it. */
static ps_obj *ps_text(const char *text) {
  json_t *j = js(text);
  ps_val v;
  assert_int_equal(ps_from_json(j, &v), 0);
  json_decref(j);
  assert_int_equal(ps_typeof(&v), PS_OBJ);
  return ps_obj_of(&v);
}

#endif
