/* bytes.h: unaligned little loads for the word-at-a-time string code (pstore.c hashes
 * and compares keys, lconv.c checks UTF-8). memcpy compiles to one load. Lua-free. */
#ifndef WSUP_BYTES_H
#define WSUP_BYTES_H

#include <stdint.h>
#include <string.h>

static inline uint64_t bytes_load32(const void *p) {
  uint32_t w;
  memcpy(&w, p, 4);
  return w;
}

static inline uint64_t bytes_load64(const void *p) {
  uint64_t w;
  memcpy(&w, p, 8);
  return w;
}

#endif
