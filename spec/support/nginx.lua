-- Starts Debian's nginx on 127.0.0.1 with spec/nginx/nginx.conf, for specs that want
-- an independent server: plain HTTP on port, HTTPS (HTTP/2, a self-signed certificate
-- for 127.0.0.1 made here with openssl) on port + 1. Returns nil, reason when nginx or
-- openssl is not installed.
local wsup = require "wsup"

local M = {}

local function sh(cmd)
  local ok = os.execute(cmd)
  return ok == true or ok == 0
end

function M.start(port)
  if not sh("command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx") then
    return nil, "nginx is not installed"
  end
  local prefix = os.tmpname()
  os.remove(prefix)
  assert(sh("mkdir -p " .. prefix .. "/data && chmod 755 " .. prefix .. " && chmod 777 " .. prefix .. "/data"))
  if not sh(("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 "
      .. "-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -keyout %s/key.pem -out %s/cert.pem "
      .. ">/dev/null 2>&1"):format(prefix, prefix)) then
    return nil, "openssl could not make a certificate"
  end
  local src = assert(io.open("spec/nginx/nginx.conf")):read("a")
  local conf = src:gsub("PREFIX", prefix):gsub("TLSPORT", tostring(port + 1)):gsub("PORT", tostring(port))
  local f = assert(io.open(prefix .. "/nginx.conf", "w"))
  f:write(conf)
  f:close()
  local nginx = sh("command -v nginx >/dev/null 2>&1") and "nginx" or "/usr/sbin/nginx"
  assert(sh(("%s -c %s/nginx.conf -p %s >%s/out.log 2>&1 &"):format(nginx, prefix, prefix, prefix)))
  local url = ("http://127.0.0.1:%d"):format(port)
  for _ = 1, 100 do -- up to 5 s for nginx to listen
    local res = wsup.http.request { url = url .. "/worker/ping", timeout_ms = 500 }
    if res then
      return { url = url, tls_url = ("https://127.0.0.1:%d"):format(port + 1), prefix = prefix, stop = function()
        sh(("kill $(cat %s/nginx.pid) 2>/dev/null; sleep 0.2; rm -rf %s"):format(prefix, prefix))
      end }
    end
    wsup.sleep(50)
  end
  local log = io.open(prefix .. "/out.log")
  return nil, "nginx did not start: " .. (log and log:read("a") or "?")
end

return M
