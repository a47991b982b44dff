/* lcrypto.c: HMAC for send policies that sign requests, from OpenSSL (already
 * linked by libcurl's TLS), never hand-written. */
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "lwsup.h"

/* wsup.hmac_sha256(key, data [, "hex"|"raw"]) */
static int l_hmac_sha256(lua_State *L) {
  static const char *const forms[] = {"hex", "raw", NULL};
  size_t kn, dn;
  const char *key = luaL_checklstring(L, 1, &kn);
  const char *data = luaL_checklstring(L, 2, &dn);
  int form = luaL_checkoption(L, 3, "hex", forms);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (!HMAC(EVP_sha256(), key, (int)kn, (const unsigned char *)data, dn, mac, &n))
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
  lua_pushcfunction(L, l_hmac_sha256);
  lua_setfield(L, -2, "hmac_sha256");
}
