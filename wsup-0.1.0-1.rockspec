-- wsup as a LuaRocks rock: `luarocks --lua-version=5.4 make` from a clone (add --local
-- or --tree DIR to install somewhere else). The build is the project's own Makefile,
-- so the sources and flags never drift from `make`: it builds the C module
-- wsup_core.so (src/*.c minus main.c) and the wsup host, then `make install` puts
-- them, lua/wsup/*.lua and the man page where LuaRocks says.
rockspec_format = "3.0"
package = "wsup"
version = "0.1.0-1"

source = {
  -- Placeholder: `luarocks make` builds from the working tree and never fetches this.
  url = "git+https://example.invalid/wsup.git",
  tag = "v0.1.0",
}

description = {
  -- license = "...",  -- TODO: the project has no LICENSE yet; `luarocks lint` wants one.
  summary = "Coalescing uploader of worker state: a libuv/libcurl runtime for Lua 5.4",
  detailed = [[
wsup keeps a server informed of a worker's state with at most one request in flight
and one pending patch: new patches merge into the pending one, failures retry with
capped exponential backoff and jitter. The C core (libuv, libcurl, jansson,
libmicrohttpd, OpenSSL's libcrypto) loads in stock Lua 5.4 as require "wsup"; the
rock also installs the wsup host command.]],
}

dependencies = {
  "lua >= 5.4, < 5.5",
}

-- Checked before the build for a clear message; the Makefile itself takes its flags
-- from pkg-config (Debian: libuv1-dev libcurl4-openssl-dev libjansson-dev
-- libmicrohttpd-dev libssl-dev liblua5.4-dev pkg-config). libcurl is looked up by
-- library only: Debian keeps curl/curl.h under a multiarch include directory.
external_dependencies = {
  LIBUV = { header = "uv.h", library = "uv" },
  LIBCURL = { library = "curl" },
  JANSSON = { header = "jansson.h", library = "jansson" },
  MICROHTTPD = { header = "microhttpd.h", library = "microhttpd" },
  LIBCRYPTO = { header = "openssl/hmac.h", library = "crypto" },
}

build = {
  type = "make",
  -- OPT is the Makefile's optimisation/debug flags; CFLAGS itself must not be set on
  -- the command line, or make would drop the Makefile's own -std=c11 -fPIC ...
  build_variables = {
    OPT = "$(CFLAGS)",
  },
  install_variables = {
    PREFIX = "$(PREFIX)",
    BINDIR = "$(BINDIR)",
    LUA_LMOD = "$(LUADIR)",
    LUA_CMOD = "$(LIBDIR)",
    MANDIR = "$(PREFIX)/share/man",
  },
}
