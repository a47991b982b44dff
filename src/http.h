/* http.h — Lua-free HTTP client: libcurl multi_socket driven by a libuv loop.
 * Single-threaded: every function must be called on the loop's thread. */
#ifndef WSUP_HTTP_H
#define WSUP_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <uv.h>

typedef struct http_client http_client;
typedef struct http_xfer http_xfer;

typedef struct http_header { char *name; char *value; } http_header; /* name lower-cased, value trimmed */

typedef struct http_res {
  long status;            /* final HTTP status; 0 whenever err != 0 */
  int err;                /* CURLcode, 0 = ok */
  const char *errmsg;     /* human text for err (curl error buffer), "" if ok */
  http_header *headers;   /* headers of the final response only (reset on each status line) */
  size_t n_headers;
  char *body;             /* NUL-terminated (never NULL); body_len excludes the NUL */
  size_t body_len;
  size_t bytes_sent;      /* request body bytes uploaded */
  int truncated;          /* with http_req.truncate_body: the body went over max_body and was cut to it */
} http_res;               /* owned by the xfer; valid only during the done callback */

typedef void (*http_done_fn)(void *ud, const http_res *res);
typedef void (*http_closed_fn)(void *ud);

typedef struct http_req {
  const char *method;     /* "PUT", "GET", ...; NULL = "GET" */
  const char *url;        /* http:// or https:// only */
  const char *const *headers; size_t n_headers; /* "Name: value" lines ("Name:" removes a default); copied */
  const char *body; size_t body_len; /* copied; a non-NULL body (even empty) is sent with Content-Length;
                                        NULL for POST/PUT/PATCH means empty. With a body, "Expect:" is added
                                        and curl's default form Content-Type is removed unless the caller
                                        sets Content-Type */
  long timeout_ms, connect_timeout_ms; /* 0 = none (curl's 300 s default for connect) */
  size_t max_body;        /* response body limit; 0 = 1 MiB; over it: err != 0, errmsg "response body over limit" */
  int truncate_body;      /* 1: over max_body, keep its first max_body bytes (res.truncated) instead of failing */
  long max_redirects;     /* 0 = do not follow redirects; n > 0 follows up to n (http/https only) */
  int insecure;           /* 1 disables TLS peer/host verification; default verifies */
  const char *ca_file;    /* CA certificates (PEM) to verify with instead of the system's; NULL: the system's */
  int shard;              /* connection cache, from http_claim; 0 (one shared by one-off requests) by default */
} http_req;

/* Caller owns the client (free with http_client_close); loop is borrowed and must outlive it. NULL on failure. */
http_client *http_client_new(uv_loop_t *loop, char *err, size_t errlen); /* NULL with a message in err */

/* Starts a transfer; everything in r is copied. The client owns the xfer; the handle is valid until done
 * has returned or http_cancel was called. done runs later from the loop (never inside http_start),
 * exactly once unless cancelled; it may start or cancel transfers and may close the client.
 * On a bad request or OOM returns NULL, done is never called and the reason is written to err (if non-NULL). */
http_xfer *http_start(http_client *c, const http_req *r, http_done_fn done, void *ud, char *err, size_t errlen);

/* Aborts x; done is never called for it afterwards. NULL is a no-op; inside x's own done callback a no-op. */
void http_cancel(http_xfer *x);

/* Consumes c: cancels all transfers (no done callbacks), closes its uv handles asynchronously, then frees it.
 * c and all its xfer handles are unusable at once; may be called from a done callback. closed(ud) (may be
 * NULL) runs from the loop once every handle is closed and the memory is freed; until then the closing
 * handles keep the loop alive, so uv_run(loop, UV_RUN_DEFAULT) returning is also a safe signal. */
void http_client_close(http_client *c, http_closed_fn closed, void *ud);

/* Header rules (RFC 9110 5.6.2, 5.5): a name is a non-empty token; a value holds no CR, LF or
 * other control character but tab. 1 if s[0..n) passes. Pure. */
int http_is_token(const char *s, size_t n);
int http_is_field_value(const char *s, size_t n);
/* 1 if a URL holds no whitespace or control character (validated requests refuse them). Pure. */
int http_url_chars_ok(const char *url);
/* 1 if a request header line ("Name: value", or "Name;" for an empty value) has this
 * name, compared without case. Pure. */
int http_header_is(const char *line, const char *name);

/* Retry-After value (delta-seconds or HTTP-date) in ms from now; -1 if NULL/unparsable; past dates give 0. Pure. */
int64_t http_retry_after_ms(const char *value, time_t now);

/* Connection caches. libcurl walks a host's whole cache on every transfer, so a client that many
 * claimants (uploaders, each making one request at a time to its own place) share keeps several,
 * each holding at most a few dozen claims. A claimant calls http_claim once and puts the result in
 * http_req.shard for each of its requests, which then reuse the connections of that cache;
 * http_release ends the claim. http_claim returns -1 on OOM or while closing; http_release of -1,
 * or after close, is a no-op. Borrow c. */
int http_claim(http_client *c);
void http_release(http_client *c, int shard);

/* Number of transfers started and neither finished nor cancelled. Borrows c. */
size_t http_active(const http_client *c);

#endif
