/* fuzz_receiver.c: the reference receiver's request path, over a loopback socket.
 *
 * One receiver per process (127.0.0.1, ephemeral port, max_body 1024), started in
 * LLVMFuzzerInitialize and restarted every RESTART_EVERY inputs so that states do
 * not pile up. Byte 0 of the input picks the mode:
 *   even: raw. The rest is sent as is and the write side is shut. Then a GET
 *         /worker on a new connection must answer 200 with a JSON object (the
 *         server keeps serving), and whatever the raw connection got by then must
 *         be empty or start with a well-formed status line. Once reset by us, the
 *         connection must be gone within 5 s (so no request of it is left over).
 *         FUZZ_STRICT=1 also wants the server to close it after our FIN (finding
 *         F2: with epoll it is held until the 300 s connection timeout).
 *   odd:  structured. Byte 1 picks the method, byte 2 the path, byte 3 the framing
 *         (Content-Length, chunked with chunk sizes from the input, none; Expect:
 *         100-continue), then path suffix bytes, then the body. The answer must be
 *         exactly what the README says: 404 for other paths, 405 for other methods,
 *         413 past max_body, 400 for a body that is not a JSON object, else 200
 *         with the folded state, which must equal the reference fold of the state
 *         before (rcv_state) and what rcv_state says after; one request counted.
 * Only 127.0.0.1 is ever contacted. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "receiver.h"

#define MAX_BODY 1024
#ifndef RESTART_EVERY
#define RESTART_EVERY 20000
#endif
#define IO_TIMEOUT_MS 5000
#define RESP_MAX (64 * 1024)

static rcv *srv;
static int port;
static unsigned long inputs;
static int strict;
static int idle_sockets; /* sockets open while the server has no connection */
static const char *const merge_keys[] = {"external_metadata", "internal_metadata"};
static const keyset ks = {merge_keys, 2};

static int open_sockets(void);

static void start(void) {
  char err[256];
  rcv_opts o = {.host = "127.0.0.1", .port = 0, .max_body = MAX_BODY};
  if (!(srv = rcv_start(&o, err, sizeof err))) die("rcv_start: %s", err);
  port = rcv_port(srv);
  idle_sockets = open_sockets();
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  const char *e = getenv("FUZZ_STRICT");
  (void)argc, (void)argv;
  strict = e && *e && strcmp(e, "0") != 0;
  signal(SIGPIPE, SIG_IGN);
  start();
  return 0;
}

static long long ms_now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static int dial(void) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0) die("socket: %s", strerror(errno));
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    /* Interrupted (libFuzzer's SIGALRM): the connection goes on; wait for it. */
    struct pollfd p = {fd, POLLOUT, 0};
    int err = errno, r;
    socklen_t len = sizeof err;
    if (err != EINTR) die("connect 127.0.0.1:%d: %s", port, strerror(err));
    while ((r = poll(&p, 1, IO_TIMEOUT_MS)) < 0 && errno == EINTR) {}
    if (r <= 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err)
      die("connect 127.0.0.1:%d: %s", port, r <= 0 ? "timed out" : strerror(err));
  }
  return fd;
}

/* Closes with a reset: no TIME_WAIT piles up on our side. */
static void hang_up(int fd) {
  struct linger l = {1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  close(fd);
}

/* Sends all of p; returns 0, or -1 when the server closed first. */
static int send_all(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) return -1;
    p += k, n -= (size_t)k;
  }
  return 0;
}

/* Reads until EOF (or a reset) into out; dies if the server neither answers nor
 * closes within IO_TIMEOUT_MS. Returns the length. */
static size_t read_all(int fd, char *out, size_t cap, const char *what) {
  size_t n = 0;
  long long end = ms_now() + IO_TIMEOUT_MS;
  for (;;) {
    struct pollfd p = {fd, POLLIN, 0};
    long long left = end - ms_now();
    ssize_t k;
    if (left <= 0) die("%s: no answer and no close within %d ms (got %zu bytes: %.*s)", what, IO_TIMEOUT_MS, n, (int)n, out);
    if (poll(&p, 1, (int)left) < 0 && errno != EINTR) die("poll: %s", strerror(errno));
    if (!p.revents) continue;
    k = recv(fd, out + n, cap - n, 0);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) break; /* EOF, or a reset */
    n += (size_t)k;
    if (n == cap) die("%s: answer longer than %zu bytes", what, cap);
  }
  return n;
}

/* "HTTP/1.x NNN reason\r\n" at p; returns NNN, or 0 when malformed. */
static int status_line(const char *p, size_t n) {
  const char *eol = memmem(p, n, "\r\n", 2);
  if (!eol || eol - p < 12 || (memcmp(p, "HTTP/1.1 ", 9) != 0 && memcmp(p, "HTTP/1.0 ", 9) != 0)) return 0;
  if (p[9] < '1' || p[9] > '9' || p[10] < '0' || p[10] > '9' || p[11] < '0' || p[11] > '9') return 0;
  if (eol - p > 12 && p[12] != ' ') return 0;
  for (const char *c = p + 12; c < eol; c++)
    if ((unsigned char)*c < 0x20 && *c != '\t') return 0;
  return (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
}

/* The final response in buf: skips 1xx ones. Sets *body to what follows its headers. */
static int final_status(char *buf, size_t n, const char **body, size_t *blen, const char *what) {
  const char *p = buf, *end = buf + n;
  for (;;) {
    const char *hend;
    int st = status_line(p, (size_t)(end - p));
    if (!st) die("%s: malformed status line: %.*s", what, (int)(n > 200 ? 200 : n), p);
    if (!(hend = memmem(p, (size_t)(end - p), "\r\n\r\n", 4))) die("%s: headers do not end: %.*s", what, (int)n, buf);
    hend += 4;
    if (st >= 200) {
      *body = hend;
      *blen = (size_t)(end - hend);
      return st;
    }
    p = hend;
  }
}

static void liveness(void) {
  static char buf[RESP_MAX];
  static const char req[] = "GET /worker HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  const char *body;
  size_t n, blen;
  int fd = dial(), st;
  json_t *j;
  if (send_all(fd, req, sizeof req - 1) != 0) die("liveness: send: %s", strerror(errno));
  n = read_all(fd, buf, sizeof buf, "liveness GET");
  hang_up(fd);
  if (!n) die("liveness: GET /worker got no answer");
  if ((st = final_status(buf, n, &body, &blen, "liveness GET")) != 200) die("liveness: GET /worker answered %d", st);
  j = parse_out(body, blen, "liveness body");
  if (!json_is_object(j)) die("liveness: GET /worker body %s", show(j));
  json_decref(j);
}

/* Open sockets of this process (the server's are ours too). Only sockets: the
 * sanitizers' symbolizer, for one, opens pipes whenever it likes. */
static int open_sockets(void) {
  char link[64], path[300];
  int n = 0;
  struct dirent *e;
  DIR *d = opendir("/proc/self/fd");
  if (!d) die("opendir /proc/self/fd: %s", strerror(errno));
  while ((e = readdir(d)) != NULL) {
    ssize_t k;
    snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
    if ((k = readlink(path, link, sizeof link - 1)) > 0 && (link[k] = '\0', strncmp(link, "socket:", 7) == 0)) n++;
  }
  closedir(d);
  return n;
}

/* What has arrived on fd so far, without waiting; once something has, waits (up to
 * IO_TIMEOUT_MS) until its first line is complete, so a status line is never judged
 * half-read. */
static size_t read_some(int fd, char *out, size_t cap) {
  size_t n = 0;
  long long end = ms_now() + IO_TIMEOUT_MS;
  for (;;) {
    struct pollfd p = {fd, POLLIN, 0};
    int wait = n && !memmem(out, n, "\r\n", 2) ? (int)(end - ms_now()) : 0;
    ssize_t k;
    int r;
    if (wait < 0) die("raw request: the first line of the answer did not complete: %.*s", (int)n, out);
    if ((r = poll(&p, 1, wait)) < 0 && errno == EINTR) continue;
    if (r <= 0 || !p.revents) return n;
    k = recv(fd, out + n, cap - n, 0);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return n;
    if ((n += (size_t)k) == cap) return n;
  }
}

/* Waits until the server has closed every connection (it closes one when the
 * client resets it), so that nothing left of one input touches the next. */
static void wait_quiet(const char *what) {
  long long end = ms_now() + IO_TIMEOUT_MS;
  int n;
  while ((n = open_sockets()) > idle_sockets) {
    if (ms_now() > end) die("%s: %d connections still open %d ms after the client reset them", what, n - idle_sockets, IO_TIMEOUT_MS);
    usleep(100);
  }
}

static void raw(const uint8_t *data, size_t size) {
  static char buf[RESP_MAX];
  int fd = dial();
  size_t n;
  if (send_all(fd, (const char *)data, size) == 0) shutdown(fd, SHUT_WR);
  /* The server must serve others whatever this connection holds. The GET goes in
   * after the raw bytes, so their answer, if any, has usually come by its end. */
  liveness();
  if (strict) {
    /* A client that half-closes gets its answer and then the close (finding F2). */
    n = read_all(fd, buf, sizeof buf, "raw request (FUZZ_STRICT: the server must close after the client's FIN)");
  } else {
    n = read_some(fd, buf, sizeof buf);
  }
  hang_up(fd);
  if (n && !status_line(buf, n)) die("raw request: malformed status line: %.*s", (int)(n > 200 ? 200 : n), buf);
  wait_quiet("raw request");
}

static const char *const methods[8] = {"GET", "PUT", "POST", "DELETE", "HEAD", "PATCH", "put", "OPTIONS"};
/* Request target and the path the server routes on. */
static const char *const targets[8][2] = {
    {"/worker", "/worker"}, {"/worker/", "/worker/"}, {"/worker/a/b", "/worker/a/b"},
    {"/worker?x=1&y", "/worker"}, {"/", "/"}, {"/workers", "/workers"},
    {"/worker/", NULL}, /* + suffix bytes */ {"/other", "/other"}};
static const char suffix_chars[] = "abcxyz01_-/";

static int expected_status(const char *method, const char *path, const char *body, size_t blen, json_t **patch) {
  json_t *j;
  *patch = NULL;
  if (strcmp(path, "/worker") != 0 && strncmp(path, "/worker/", 8) != 0) return 404;
  if (strcmp(method, "GET") == 0) return 200;
  if (strcmp(method, "PUT") != 0) return 405;
  if (blen > MAX_BODY) return 413;
  j = json_loadb(body, blen, JSON_DECODE_ANY, NULL);
  if (!json_is_object(j)) {
    json_decref(j);
    return 400;
  }
  *patch = j;
  return 200;
}

static void structured(const uint8_t *data, size_t size) {
  static char req[8192], buf[RESP_MAX];
  src in = {data, size};
  const char *method = methods[take(&in) & 7], *body, *rbody;
  unsigned ti = take(&in) & 7, framing = take(&in), slen;
  char target[64], path[64];
  size_t n = 0, blen, rlen, got;
  int fd, st, want, declared_too_big;
  unsigned long before = rcv_requests(srv);
  json_t *patch, *prev, *expect = NULL, *j, *now;

  snprintf(target, sizeof target, "%s", targets[ti][0]);
  if (ti == 6) { /* suffix: up to 8 characters */
    slen = take(&in) % 9;
    for (unsigned i = 0; i < slen; i++) {
      size_t l = strlen(target);
      target[l] = suffix_chars[take(&in) % (sizeof suffix_chars - 1)];
      target[l + 1] = '\0';
    }
  }
  snprintf(path, sizeof path, "%s", targets[ti][1] ? targets[ti][1] : target);
  body = (const char *)in.p;
  blen = in.n;
  want = expected_status(method, path, body, blen, &patch);
  prev = rcv_state(srv, path);
  if (want == 200 && patch) {
    expect = prev ? json_deep_copy(prev) : json_object();
    ref_server_fold(expect, patch, &ks);
  } else if (want == 200) {
    expect = prev ? json_incref(prev) : json_object();
  }

  n = (size_t)snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s", method, target,
                       framing & 4 ? "Expect: 100-continue\r\n" : "");
  /* Framing 0-1: Content-Length; 2: chunked; 3: no length (the body is not sent). */
  declared_too_big = 0;
  switch (framing & 3) {
  case 2: {
    size_t off = 0;
    n += (size_t)snprintf(req + n, sizeof req - n, "Transfer-Encoding: chunked\r\n\r\n");
    while (off < blen) {
      size_t c = 1 + (size_t)(data[off % size] % 64);
      if (c > blen - off) c = blen - off;
      if (n + c + 32 > sizeof req) die("request buffer");
      n += (size_t)snprintf(req + n, sizeof req - n, "%zx\r\n", c);
      memcpy(req + n, body + off, c);
      n += c;
      memcpy(req + n, "\r\n", 2);
      n += 2;
      off += c;
    }
    n += (size_t)snprintf(req + n, sizeof req - n, "0\r\n\r\n");
    break;
  }
  case 3:
    n += (size_t)snprintf(req + n, sizeof req - n, "\r\n");
    if (blen) { /* no body after all: re-derive what the server sees */
      json_decref(patch);
      json_decref(expect);
      expect = NULL;
      want = expected_status(method, path, "", 0, &patch);
      if (want == 200) expect = prev ? json_incref(prev) : json_object();
    }
    break;
  default:
    n += (size_t)snprintf(req + n, sizeof req - n, "Content-Length: %zu\r\n\r\n", blen);
    /* A declared oversize is refused from the headers: send no body, or the
     * server's close would reset the connection under its answer. */
    declared_too_big = want == 413;
    if (!declared_too_big) {
      if (n + blen > sizeof req) die("request buffer");
      memcpy(req + n, body, blen);
      n += blen;
    }
    break;
  }

  fd = dial();
  if (send_all(fd, req, n) != 0) die("%s %s: send: %s", method, target, strerror(errno));
  got = read_all(fd, buf, sizeof buf, "structured request");
  hang_up(fd);
  if (!got) die("%s %s: no answer (want %d)", method, target, want);
  st = final_status(buf, got, &rbody, &rlen, "structured request");
  if (st != want)
    die("%s %s (framing %u, %zu body bytes): answered %d, want %d: %.*s", method, target, framing & 7, blen, st, want,
        (int)(rlen > 300 ? 300 : rlen), rbody);
  if (rcv_requests(srv) != before + 1) die("%s %s: %lu requests counted, want 1", method, target, rcv_requests(srv) - before);
  if (strcmp(method, "HEAD") != 0 && rlen) {
    j = parse_out(rbody, rlen, "response body");
    if (!json_is_object(j)) die("response body %s is not an object", show(j));
    if (expect && !same_json(j, expect)) die("%s %s answered %s, reference %s", method, target, show(j), show(expect));
    if (!expect && !json_is_string(json_object_get(j, "error"))) die("error answer without \"error\": %s", show(j));
    json_decref(j);
  } else if (strcmp(method, "HEAD") != 0) {
    die("%s %s: empty body", method, target);
  }
  now = rcv_state(srv, path);
  if (want == 200 && patch && !same_json(now, expect)) die("rcv_state(%s) = %s, reference %s", path, show(now), show(expect));
  if (!(want == 200 && patch) && !(prev ? now && same_json(now, prev) : !now)) die("state of %s changed on a %d", path, want);
  json_decref(now);
  json_decref(prev);
  json_decref(patch);
  json_decref(expect);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!size) return 0;
  if (++inputs % RESTART_EVERY == 0) {
    rcv_stop(srv);
    start();
  }
  if (data[0] & 1) structured(data + 1, size - 1);
  else raw(data + 1, size - 1);
  return 0;
}
