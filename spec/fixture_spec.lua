-- Checks the test fixtures themselves (nginx and bad_server) with the curl
-- command-line tool, so an HTTP spec failure can be trusted to be lunio's.
-- Needs no lunio: busted --lua=lua5.4 spec/fixture_spec.lua
if not package.path:find("spec/?.lua", 1, true) then
  package.path = "spec/?.lua;" .. package.path
end

local nginx = require "support.nginx"
local bad_server = require "support.bad_server"

local function sh(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  local ok, _, code = p:close()
  return out, ok, code
end

local function q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- curl with -sS; returns body, exit code.
local function curl(args)
  local out, _, code = sh("curl -sS " .. args .. " 2>/dev/null")
  return out, code
end

-- Runs curl and returns the value of a -w format (after the body, which is
-- discarded).
local function curl_w(fmt, args)
  local out = curl("-o /dev/null -w " .. q(fmt) .. " " .. args)
  return out
end

local function size_of(args)
  return tonumber(curl_w("%{size_download}", args))
end

local process_alive = bad_server.alive

describe("nginx fixture", function()
  local srv, master, workers

  setup(function()
    srv = nginx.start()
    master = tonumber(io.open(srv.pid_file):read("l"))
    workers = {}
    for pid in sh("pgrep -P " .. master):gmatch("%d+") do
      workers[#workers + 1] = tonumber(pid)
    end
  end)

  teardown(function()
    if srv then srv:stop() end
  end)

  it("exposes three ports, a cert and a URL builder", function()
    assert.is_number(srv.http)
    assert.is_number(srv.h2c)
    assert.is_number(srv.tls)
    assert.are_not.equal(srv.http, srv.h2c)
    assert.are_not.equal(srv.http, srv.tls)
    assert.truthy(io.open(srv.cert))
    assert.equal("http://127.0.0.1:" .. srv.http .. "/a", srv:url("/a"))
    assert.equal("http://127.0.0.1:" .. srv.h2c .. "/a", srv:url("/a", "h2c"))
    assert.equal("https://127.0.0.1:" .. srv.tls .. "/a", srv:url("/a", "tls"))
    assert.equal(1, #workers)
  end)

  it("serves the static files with exact sizes on all servers", function()
    for _, which in ipairs { "http", "h2c", "tls" } do
      local opts = which == "h2c" and "--http2-prior-knowledge "
        or which == "tls" and "--cacert " .. q(srv.cert) .. " " or ""
      assert.equal(1024, size_of(opts .. q(srv:url("/small.txt", which))))
      assert.equal(1048576, size_of(opts .. q(srv:url("/large.bin", which))))
    end
    assert.equal(32 * 1048576, size_of(q(srv:url("/big.bin"))))
  end)

  it("speaks h2c with prior knowledge and h2 over TLS", function()
    assert.equal("2", curl_w("%{http_version}",
      "--http2-prior-knowledge " .. q(srv:url("/small.txt", "h2c"))))
    assert.equal("2", curl_w("%{http_version}",
      "--cacert " .. q(srv.cert) .. " " .. q(srv:url("/small.txt", "tls"))))
    assert.equal("1.1", curl_w("%{http_version}", q(srv:url("/small.txt"))))
  end)

  it("verifies TLS with the fixture cert for 127.0.0.1 and localhost", function()
    local _, code = curl("-o /dev/null " .. q(srv:url("/small.txt", "tls")))
    assert.equal(60, code) -- unknown CA without --cacert
    _, code = curl("-o /dev/null --cacert " .. q(srv.cert) .. " "
      .. q("https://localhost:" .. srv.tls .. "/small.txt"))
    assert.equal(0, code)
  end)

  it("returns any status from /status/NNN", function()
    for _, code in ipairs { 200, 201, 204, 404, 418, 500, 503 } do
      assert.equal(tostring(code),
        curl_w("%{http_code}", q(srv:url("/status/" .. code))))
    end
    assert.equal("status 404\n", curl(q(srv:url("/status/404"))))
  end)

  it("follows /redirect/N chains and loops on /loop", function()
    local out = curl_w("%{num_redirects} %{url_effective}",
      "-L " .. q(srv:url("/redirect/3")))
    assert.equal("4 " .. srv:url("/small.txt"), out)
    assert.equal("302", curl_w("%{http_code}", q(srv:url("/redirect/0"))))
    local _, code = curl("-o /dev/null -L --max-redirs 5 " .. q(srv:url("/loop")))
    assert.equal(47, code) -- too many redirects
  end)

  it("echoes method, query, headers and body on /echo", function()
    local body = curl("-X POST --data-binary 'a=1&b=two' -H 'X-Test: yes' "
      .. q(srv:url("/echo?x=1&y=2")))
    assert.matches("method=POST\n", body, 1, true)
    assert.matches("query=x=1&y=2\n", body, 1, true)
    assert.matches("header.x-test=yes\n", body, 1, true)
    assert.matches("\nX-Test: yes\r\n", body, 1, true)
    assert.matches("body=a=1&b=two\n", body, 1, true)
    -- HTTP/2: no raw header block, but the header.* lines work.
    body = curl("--http2-prior-knowledge -X PUT --data-binary hi "
      .. "-H 'X-Custom: c' " .. q(srv:url("/echo", "h2c")))
    assert.matches("method=PUT\n", body, 1, true)
    assert.matches("header.x-custom=c\n", body, 1, true)
    assert.matches("body=hi\n", body, 1, true)
  end)

  it("sends repeated headers on /headers/multi", function()
    local out = curl("-D - -o /dev/null " .. q(srv:url("/headers/multi")))
    local cookies, multi = 0, 0
    for line in out:gmatch("[^\r\n]+") do
      if line:lower():match("^set%-cookie:") then cookies = cookies + 1 end
      if line:lower():match("^x%-multi:") then multi = multi + 1 end
    end
    assert.equal(2, cookies)
    assert.equal(2, multi)
  end)

  it("answers /slow after about 3 s", function()
    local t = tonumber(curl_w("%{time_total}", q(srv:url("/slow"))))
    assert.is_true(t >= 2.9 and t < 6, "took " .. t)
    local _, code = curl("-o /dev/null -m 0.5 " .. q(srv:url("/slow")))
    assert.equal(28, code) -- timeout
  end)

  it("answers /pause after about half a second", function()
    local t = tonumber(curl_w("%{time_total}", q(srv:url("/pause"))))
    assert.is_true(t >= 0.45 and t < 3, "took " .. t)
    assert.equal("pause done\n", (curl(q(srv:url("/pause")))))
  end)

  it("streams /chunked in pieces", function()
    local out = curl("-D - -N " .. q(srv:url("/chunked")))
    assert.matches("[Tt]ransfer%-[Ee]ncoding: chunked", out)
    assert.matches("chunk 1\nchunk 2\nchunk 3\nchunk 4\n$", out)
    local t = tonumber(curl_w("%{time_total}", q(srv:url("/chunked"))))
    assert.is_true(t >= 0.25, "took " .. t)
  end)

  it("gzips /gzip.txt for clients that accept it", function()
    local plain = size_of(q(srv:url("/gzip.txt")))
    assert.is_true(plain >= 10240)
    local gz = size_of("-H 'Accept-Encoding: gzip' " .. q(srv:url("/gzip.txt")))
    assert.is_true(gz < plain / 4, "gzip size " .. gz)
    assert.equal(plain, #curl("--compressed " .. q(srv:url("/gzip.txt"))))
    local headers = curl("-D - -o /dev/null --compressed " .. q(srv:url("/gzip.txt")))
    assert.matches("[Cc]ontent%-[Ee]ncoding: gzip", headers)
    -- small.txt is never compressed, so its length stays 1024 on the wire.
    assert.equal(1024, size_of("-H 'Accept-Encoding: gzip' " .. q(srv:url("/small.txt"))))
  end)

  it("counts distinct connections in the access log", function()
    srv:clear_log()
    assert.equal(0, srv:connections())
    -- one curl process, three URLs: one keep-alive connection
    curl("-o /dev/null -o /dev/null -o /dev/null " .. q(srv:url("/small.txt"))
      .. " " .. q(srv:url("/small.txt")) .. " " .. q(srv:url("/small.txt")))
    assert.equal(1, srv:connections())
    assert.equal(3, srv:requests())
    curl("-o /dev/null " .. q(srv:url("/small.txt")))
    curl("-o /dev/null --http2-prior-knowledge " .. q(srv:url("/small.txt", "h2c")))
    assert.equal(3, srv:connections())
    assert.equal(2, srv:connections("http"))
    assert.equal(1, srv:connections("h2c"))
  end)

  it("stops nginx and removes its directory", function()
    local dir = srv.dir
    srv:stop()
    assert.is_false(process_alive(master))
    for _, pid in ipairs(workers) do assert.is_false(process_alive(pid)) end
    assert.is_nil(io.open(dir .. "/nginx.conf"))
    local _, code = curl("-o /dev/null " .. q(srv:url("/small.txt")))
    assert.equal(7, code) -- connection refused
    srv:stop() -- idempotent
  end)
end)

describe("bad_server", function()
  it("announces 100000 bytes, sends 1000 and closes", function()
    local bad = bad_server.start()
    finally(function() bad:stop() end)
    assert.is_number(bad.port)
    local headers = curl("-D - -o /dev/null " .. q(bad:url("/x")))
    assert.matches("Content%-Length: 100000", headers)
    local out, code = curl(q(bad:url("/x")))
    assert.equal(18, code) -- partial file
    assert.equal(1000, #out)
    -- it keeps serving new connections
    out, code = curl(q(bad:url("/again")))
    assert.equal(18, code)
    assert.equal(1000, #out)
    local pid = bad.pid
    bad:stop()
    assert.is_false(process_alive(pid))
  end)
end)
