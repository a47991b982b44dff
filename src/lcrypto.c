/* lcrypto.c: HMAC for send policies that sign requests, from OpenSSL's libcrypto
 * (loaded on first use, see dl.h; libcurl's TLS loads it too), never hand-written. */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <string.h>

#include "dl.h"
#include "lwsup.h"

#ifdef WSUP_CRYPTO_SO
#define CRYPTO_SO_NAME DL_STR(WSUP_CRYPTO_SO) /* the SONAME compiled against (Makefile) */
#else
#define CRYPTO_SO_NAME "libcrypto.so.3"
#endif

/* The functions used, typed from OpenSSL's headers; in the closure's upvalue, NULL
 * until loaded. */
typedef struct crypto_api {
  __typeof__(HMAC) *hmac;
  __typeof__(EVP_sha256) *sha256;
} crypto_api;

static const dl_fn crypto_fns[] = {{"HMAC", offsetof(crypto_api, hmac)}, {"EVP_sha256", offsetof(crypto_api, sha256)}};

/* wsup.hmac_sha256(key, data [, "hex"|"raw"]) */
static int l_hmac_sha256(lua_State *L) {
  static const char *const forms[] = {"hex", "raw", NULL};
  size_t kn, dn;
  const char *key = luaL_checklstring(L, 1, &kn);
  const char *data = luaL_checklstring(L, 2, &dn);
  int form = luaL_checkoption(L, 3, "hex", forms);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  crypto_api *a = lua_touserdata(L, lua_upvalueindex(1));
  char err[256];
  if (!a->hmac && dl_load(CRYPTO_SO_NAME, a, crypto_fns, sizeof crypto_fns / sizeof *crypto_fns, err, sizeof err) != 0)
    return luaL_error(L, "wsup.hmac_sha256: %s", err);
  if (!a->hmac(a->sha256(), key, (int)kn, (const unsigned char *)data, dn, mac, &n))
    return luaL_error(L, "wsup.hmac_sha256: OpenSSL failed");
  if (form == 1) {
    lua_pushlstring(L, (const char *)mac, n);
  } else {
    char hex[2 * EVP_MAX_MD_SIZE];
    static const char digits[] = "0123456789abcdef";
    for (unsigned i = 0; i < n; i++) {
      hex[2 * i] = digits[mac[i] >> 4];
      hex[2 * i + 1] = digits[mac[i] & 15];
    }
    lua_pushlstring(L, hex, 2 * n);
  }
  return 1;
}

void lw_open_crypto(lua_State *L) {
  memset(lua_newuserdatauv(L, sizeof(crypto_api), 0), 0, sizeof(crypto_api));
  lua_pushcclosure(L, l_hmac_sha256, 1);
  lua_setfield(L, -2, "hmac_sha256");
}
