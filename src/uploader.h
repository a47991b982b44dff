/* uploader.h: the coalescing uploader's state machine. Lua-free.
 *
 * At most one attempt in flight and one pending patch. New patches coalesce into
 * pending. The first send starts on the loop's next turn. A failed attempt waits
 * min(base * 2^(failures-1), max) + U[0,1) * jitter ms (at least retry_after),
 * absorbs pending into its payload and tries again, until success or close. */
#ifndef WSUP_UPLOADER_H
#define WSUP_UPLOADER_H

#include <stdint.h>

#include "evloop.h"
#include "pstore.h"

typedef enum { UPL_OK, UPL_RETRY, UPL_DROP } upl_result;
typedef enum { UPL_IDLE, UPL_QUEUED, UPL_SENDING, UPL_BACKOFF } upl_phase;

typedef struct upl upl;

typedef struct upl_ops {
  /* Starts an attempt for u->body; the owner later calls upl_done exactly once. */
  void (*send)(upl *u);
  /* Called when nothing is pending or in flight any more, or on close. May be NULL. */
  void (*settled)(upl *u);
} upl_ops;

typedef struct upl_stats {
  uint64_t enqueued, coalesced, absorbed, attempts, delivered, failures, dropped;
  uint64_t bytes_sent;
  unsigned consecutive_failures;
} upl_stats;

struct upl {
  wl_loop *loop;        /* borrowed */
  const upl_ops *ops;   /* borrowed */
  void *ud;             /* the owner's */
  const ps_keys *keys;  /* own_keys, or the shared defaults */
  ps_keys *own_keys;    /* owned; NULL with the defaults */
  ps_obj *pending;      /* owned; NULL when nothing is pending */
  ps_obj *payload;      /* owned; the patch being sent or waiting to be retried */
  char *body;           /* owned; payload as JSON for the current attempt */
  size_t body_len;
  int64_t base_ms, max_ms, jitter_ms;
  upl_phase phase;
  int closed;
  int lost;             /* close() dropped state that was never delivered */
  wl_timer backoff;
  wl_job start;
  upl_stats st;
  char *last_error;     /* owned; NULL when none */
};

/* keys: NULL for the default merge keys, else moved into u (*keys is left empty). */
void upl_init(upl *u, wl_loop *l, const upl_ops *ops, void *ud, ps_keys *keys);
void upl_free(upl *u); /* closes and frees what u owns; the attempt in flight, if any, is abandoned */
void upl_release(upl *u); /* frees what u owns without touching its loop (which may be gone) */

/* Enqueue in two steps so a caller can fill pending without an intermediate copy:
 * upl_pending_obj gives the object to write into (created on demand), upl_commit
 * counts the enqueue and schedules the send. Returns NULL after close. */
ps_obj *upl_pending_obj(upl *u);
void upl_commit(upl *u, int had_pending);
int upl_enqueue(upl *u, ps_obj *patch); /* consumes patch; 1, 0 after close, -1 out of memory */

void upl_done(upl *u, upl_result r, int64_t retry_after_ms, const char *error);
void upl_close(upl *u);
int upl_idle(const upl *u);   /* nothing pending, nothing in flight, no retry planned */
/* Loop ms of the next attempt (now when one is queued for the next turn), -1 when none
 * is planned. Read from the timer, so a virtual clock's restart moves it too. */
int64_t upl_next_attempt(upl *u);
int64_t upl_delay(const upl *u, unsigned failures, double unit); /* backoff for the nth failure */

#endif
