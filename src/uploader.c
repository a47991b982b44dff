/* uploader.c: see uploader.h. */
#include "uploader.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Heap, not a buffer in upl: most uploaders never fail, and a fleet has many. */
static void set_error(upl *u, const char *e) {
  size_t n = e ? strlen(e) : 0;
  free(u->last_error);
  u->last_error = NULL;
  if (n > 255) {
    n = 255; /* one log line, cut between characters: messages may quote UTF-8 */
    for (int back = 0; back < 3 && ((unsigned char)e[n] & 0xc0) == 0x80; back++) n--; /* a character has 4 bytes at most */
  }
  if (n && (u->last_error = malloc(n + 1))) {
    memcpy(u->last_error, e, n);
    u->last_error[n] = '\0';
  }
}

static void settle(upl *u) {
  if (u->ops->settled) u->ops->settled(u);
}

static void drop_payload(upl *u) {
  ps_obj_free(u->payload);
  u->payload = NULL;
  free(u->body);
  u->body = NULL;
  u->body_len = 0;
}

static void attempt(upl *u) {
  free(u->body);
  u->body = ps_encode(u->payload, &u->body_len);
  if (!u->body) abort(); /* only out of memory: payloads are valid by construction */
  u->phase = UPL_SENDING;
  u->st.attempts++;
  u->st.bytes_sent += u->body_len;
  u->ops->send(u);
}

static void start_cb(void *ud) {
  upl *u = ud;
  if (u->closed || u->phase != UPL_QUEUED) return;
  u->payload = u->pending;
  u->pending = NULL;
  attempt(u);
}

static void retry_cb(void *ud) {
  upl *u = ud;
  if (u->closed) return;
  if (u->pending) {
    ps_obj *p = u->pending;
    u->pending = NULL;
    if (ps_coalesce(u->payload, p, u->keys) != 0) abort();
    u->st.absorbed++;
  }
  attempt(u);
}

static void schedule(upl *u) {
  u->phase = UPL_QUEUED;
  wl_defer(u->loop, &u->start, start_cb, u);
}

void upl_init(upl *u, wl_loop *l, const upl_ops *ops, void *ud, ps_keys *keys) {
  memset(u, 0, sizeof *u);
  u->loop = l;
  u->ops = ops;
  u->ud = ud;
  u->keys = ps_keys_defaults();
  if (keys) {
    if (!(u->own_keys = malloc(sizeof *u->own_keys))) abort(); /* out of memory while creating an uploader */
    *u->own_keys = *keys;
    keys->n = 0;
    u->keys = u->own_keys;
  }
  u->base_ms = 500;
  u->max_ms = 30000;
  u->jitter_ms = 500;
}

void upl_free(upl *u) {
  upl_close(u);
  upl_release(u);
}

void upl_release(upl *u) {
  ps_obj_free(u->pending);
  u->pending = NULL;
  drop_payload(u);
  if (u->own_keys) ps_keys_free(u->own_keys);
  free(u->own_keys);
  u->own_keys = NULL;
  free(u->last_error);
  u->last_error = NULL;
}

ps_obj *upl_pending_obj(upl *u) {
  if (u->closed) return NULL;
  if (!u->pending && !(u->pending = ps_obj_new(0))) abort();
  return u->pending;
}

void upl_commit(upl *u, int had_pending) {
  u->st.enqueued++;
  if (had_pending) u->st.coalesced++;
  if (u->phase == UPL_IDLE) schedule(u);
}

int upl_enqueue(upl *u, ps_obj *patch) {
  int had = u->pending != NULL;
  ps_obj *p = upl_pending_obj(u);
  if (!p) {
    ps_obj_free(patch);
    return 0;
  }
  if (ps_coalesce(p, patch, u->keys) != 0) return -1;
  upl_commit(u, had);
  return 1;
}

int64_t upl_delay(const upl *u, unsigned failures, double unit) {
  double exp = ldexp((double)u->base_ms, failures > 1 ? (int)(failures > 64 ? 64 : failures - 1) : 0);
  double d = floor(fmin(exp, (double)u->max_ms)) + floor(unit * (double)u->jitter_ms);
  return d >= 0x1p63 ? INT64_MAX : (int64_t)d; /* saturates: settings near INT64_MAX are "never" */
}

void upl_done(upl *u, upl_result r, int64_t retry_after_ms, const char *error) {
  if (u->phase != UPL_SENDING) return;
  if (r == UPL_RETRY) {
    u->st.failures++;
    u->st.consecutive_failures++;
    set_error(u, error ? error : "send failed");
    if (!u->closed) {
      int64_t d = upl_delay(u, u->st.consecutive_failures, wl_random(u->loop));
      if (retry_after_ms > d) d = retry_after_ms;
      u->phase = UPL_BACKOFF;
      wl_timer_start(u->loop, &u->backoff, d, retry_cb, u);
      return;
    }
    u->lost = 1;
  } else {
    u->st.consecutive_failures = 0;
    if (r == UPL_DROP) {
      u->st.dropped++;
      set_error(u, error ? error : "dropped by send");
    } else {
      u->st.delivered++;
    }
  }
  drop_payload(u);
  u->phase = UPL_IDLE;
  if (u->pending && !u->closed) schedule(u);
  else settle(u);
}

void upl_close(upl *u) {
  if (u->closed) return;
  u->closed = 1;
  if (u->pending) {
    ps_obj_free(u->pending);
    u->pending = NULL;
    u->lost = 1;
  }
  wl_cancel(u->loop, &u->start);
  wl_timer_stop(u->loop, &u->backoff);
  if (u->phase == UPL_BACKOFF) u->lost = 1;
  if (u->phase != UPL_SENDING) {
    drop_payload(u);
    u->phase = UPL_IDLE;
  }
  settle(u);
}

int upl_idle(const upl *u) { return u->phase == UPL_IDLE && !u->pending; }

int64_t upl_next_attempt(upl *u) {
  return u->phase == UPL_QUEUED ? wl_now(u->loop) : u->phase == UPL_BACKOFF ? u->backoff.due : -1;
}
