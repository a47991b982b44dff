/* receiver.h — reference receiver for the worker state uploader (Lua-free core).
 *
 * Serves PUT/GET on "/worker" and "/worker/..." from libmicrohttpd's own polling
 * thread: every PUT body (a JSON object) is folded into that path's state, which
 * starts as {}. Meant for tests and benches; binds to 127.0.0.1 unless told so.
 */
#ifndef WSUP_RECEIVER_H
#define WSUP_RECEIVER_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

typedef struct rcv rcv;

/* Zeros mean defaults: host "127.0.0.1" (numeric IPv4 or IPv6), port 0 (ephemeral),
 * max_body 1 MiB, merge_keys NULL = {"external_metadata", "internal_metadata"}.
 * A non-NULL merge_keys with n_merge_keys 0 means "no merge keys". */
typedef struct rcv_opts {
  const char *host;
  int port;
  size_t max_body;
  const char *const *merge_keys;
  size_t n_merge_keys;
} rcv_opts;

/* Called after each request is decided (before any delay), from the server thread:
 * the callee does its own locking. status is 0 for a request whose connection is
 * dropped (see rcv_chaos). state is the path's state after the PUT was applied
 * (a 200, or a drop after apply) or the state a GET answered (borrowed, valid only
 * during the call), else NULL. It may call rcv_* except rcv_stop. */
typedef void (*rcv_log_fn)(void *ud, const char *method, const char *path,
                           int status, const json_t *state);

/* Folds patch into state (both objects) in place. Top-level keys replace; under a
 * merge key an object value merges one level deep (a null member deletes) or, if the
 * stored value is not an object, becomes it minus its null members; any other value
 * replaces. Borrows both; state gets copies, never references into patch.
 * Returns 0, or -1 on bad arguments or out of memory (state then partly folded). */
int rcv_fold(json_t *state, const json_t *patch, const char *const *merge_keys, size_t n);

/* Starts serving; o may be NULL. Caller owns the result (free with rcv_stop).
 * On failure returns NULL and writes a message into err (may be NULL). */
rcv *rcv_start(const rcv_opts *o, char *err, size_t errlen);

/* The bound port (useful after port 0). */
int rcv_port(const rcv *r);

/* New reference to a deep copy of path's state (caller decrefs), or NULL if the
 * path was never written. */
json_t *rcv_state(rcv *r, const char *path);

/* The next n PUTs to accepted paths answer status (200..999) without being applied,
 * with "Retry-After: retry_after" when non-NULL (copied; max 63 chars). n <= 0 disarms. */
void rcv_fail(rcv *r, int n, int status, const char *retry_after);

/* Holds every later response back by ms without blocking other connections; 0 is off. */
void rcv_delay(rcv *r, int ms);

#define RCV_CHAOS_STATUSES 16 /* most statuses a chaos failure picks from */

/* Probabilistic faults for PUTs to accepted paths (GETs and other requests are never
 * touched; an armed rcv_fail goes first). Each PUT takes one roll of the receiver's
 * own PRNG (splitmix64, reseeded by every rcv_chaos call), which picks at most one of:
 *   drop              close the connection without a response; NOT applied
 *   fail              answer a status picked uniformly from statuses; NOT applied
 *   drop_after_apply  apply, then close without a response (a server that loses the
 *                     answer: the client retries what was already applied)
 * so fail + drop + drop_after_apply must be <= 1. A failure carries "Retry-After:
 * retry_after_value" with probability retry_after. Every chaos PUT's outcome, drops
 * included, is held back by a uniform delay in [delay_min_ms, delay_max_ms] (on top of
 * rcv_delay). Seeded, the sequence of outcomes is deterministic in request order. */
typedef struct rcv_chaos_opts {
  double fail, drop, drop_after_apply, retry_after; /* probabilities in [0, 1] */
  const int *statuses;           /* 200..999; NULL or n_statuses 0: {500, 503} */
  size_t n_statuses;             /* at most RCV_CHAOS_STATUSES */
  const char *retry_after_value; /* copied, at most 63 chars, no control chars; NULL: "1" */
  int delay_min_ms, delay_max_ms;
  uint64_t seed;
} rcv_chaos_opts;

/* Turns chaos on with o, or off with NULL. Returns 0, or -1 (nothing changed) when
 * an option is out of range. */
int rcv_chaos(rcv *r, const rcv_chaos_opts *o);

/* Requests whose connection was dropped without a response (chaos drops of both
 * kinds); *applied (may be NULL) gets those of them that had been applied. */
unsigned long rcv_dropped(rcv *r, unsigned long *applied);

/* Fills up to max (status, count) pairs in ascending status order into caller arrays;
 * returns the number of distinct statuses seen, which may exceed max. */
size_t rcv_stats(rcv *r, int *statuses, unsigned long *counts, size_t max);

/* rcv_stats, rcv_requests and rcv_dropped taken together under one lock, so that the
 * counts by status plus the dropped ones always add up to the requests. */
typedef struct rcv_totals { unsigned long requests, dropped, dropped_applied; } rcv_totals;
size_t rcv_snapshot(rcv *r, rcv_totals *t, int *statuses, unsigned long *counts, size_t max);

/* Total requests decided so far (every method and path, dropped ones included). */
unsigned long rcv_requests(rcv *r);

/* Installs (fn non-NULL) or removes the request hook; ud is borrowed. */
void rcv_on_request(rcv *r, rcv_log_fn fn, void *ud);

/* Stops the server and frees r and all it owns; NULL is a no-op. Call once. */
void rcv_stop(rcv *r);

#endif
