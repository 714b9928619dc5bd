-- lunio.http against the real nginx fixture (scripts/nginx-fixture) and the
-- bad server (spec/support/bad_server.py). No mocks: every request goes
-- through libcurl and the loop.
local lunio = require "lunio"
local http = require "lunio.http"
local nginx = require "support.nginx"
local bad_server = require "support.bad_server"
local helper = require "helper"

local async = lunio.testing.async

local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("a")
  f:close()
  return data
end

local function write_file(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

-- Runs fn, which must raise a lunio error of `kind`; returns the error.
local function raises(kind, fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error of kind " .. kind)
  assert(lunio.is_error(err, kind),
    "expected kind " .. kind .. ", got " .. tostring(err))
  return err
end

-- Awaits every task of the list; returns their first results, in order.
local function await_all(tasks)
  local out = {}
  for i, t in ipairs(tasks) do out[i] = t:await() end
  return out
end

-- Parses the /echo endpoint's "key=value" lines.
local function echo_fields(text)
  local t = {}
  for k, v in text:gmatch("([%w%.%-_]+)=([^\n]*)") do
    if t[k] == nil then t[k] = v end
  end
  t.raw = text
  return t
end

describe("lunio.http", function()
  local srv

  setup(function()
    -- The first libuv loop of a process opens libuv's global signal pipe;
    -- open it here so the first test's fd count is not blamed for it.
    lunio.new_loop():close()
    srv = nginx.start()
    write_file(srv.www .. "/data.json", '{"name":"lunio","list":[1,2,3]}')
  end)

  teardown(function()
    if srv then srv:stop() end
  end)

  describe("module", function()
    it("is reachable as lunio.http and require 'lunio.http'", function()
      assert.equal(http, require("lunio").http)
      assert.is_function(http.fetch)
      assert.is_function(http.Session)
    end)

    it("refuses to run outside a task", function()
      local ok, err = pcall(http.get, "http://127.0.0.1:1/")
      assert.is_false(ok)
      assert.matches("outside a running task", tostring(err))
    end)
  end)

  describe("basic requests", function()
    it("gets a small file", async(function()
      local r = http.get(srv:url("/small.txt"))
      assert.equal(200, r.status)
      assert.is_true(r.ok)
      assert.equal("OK", r.reason)
      assert.equal("1.1", r.http_version)
      assert.equal(srv:url("/small.txt"), r.url)
      assert.equal(1024, #r.body)
      assert.equal(read_file(srv.www .. "/small.txt"), r:text())
      assert.equal("1024", r.headers:get("Content-Length"))
      assert.equal("text/plain", r.headers:get("content-type"))
    end))

    it("fetch defaults to GET, POST when a body is given", async(function()
      local r = echo_fields(http.fetch(srv:url("/echo")):text())
      assert.equal("GET", r.method)
      r = echo_fields(http.fetch(srv:url("/echo"), { body = "x" }):text())
      assert.equal("POST", r.method)
      r = echo_fields(http.fetch(srv:url("/echo"),
        { method = "put", body = "y" }):text())
      assert.equal("PUT", r.method)
      assert.equal("y", r.body)
    end))

    it("has timings", async(function()
      local t = http.get(srv:url("/small.txt")).timings
      for _, k in ipairs({ "dns", "connect", "tls", "ttfb", "total" }) do
        assert.is_number(t[k])
        assert.is_true(t[k] >= 0)
      end
      assert.is_true(t.total >= t.ttfb)
      assert.equal(0, t.tls)
    end))

    it("sends every method with its body", async(function()
      for _, m in ipairs({ "post", "put", "patch", "delete" }) do
        local r = echo_fields(http[m](srv:url("/echo"), { body = m .. "!" }):text())
        assert.equal(m:upper(), r.method)
        assert.equal(m .. "!", r.body)
        assert.equal("", r.content_type) -- a raw body is not labelled
      end
      local r = echo_fields(http.request("OPTIONS", srv:url("/echo")):text())
      assert.equal("OPTIONS", r.method)
      r = echo_fields(http.delete(srv:url("/echo")):text())
      assert.equal("DELETE", r.method)
    end))

    it("does HEAD without a body", async(function()
      local r = http.head(srv:url("/small.txt"))
      assert.equal(200, r.status)
      assert.equal("", r.body)
      assert.equal("1024", r.headers:get("content-length"))
    end))

    it("encodes query tables and appends to an existing query",
      async(function()
        local r = echo_fields(http.get(srv:url("/echo"), {
          query = { q = "a b&c", n = 1, list = { "x", "y" } },
        }):text())
        assert.equal("list=x&list=y&n=1&q=a%20b%26c", r.query)
        r = echo_fields(http.get(srv:url("/echo?z=1"),
          { query = { { "b", "2" }, { "a", "1" } } }):text())
        assert.equal("z=1&b=2&a=1", r.query)
      end))

    it("posts forms", async(function()
      local r = echo_fields(http.post(srv:url("/echo"),
        { form = { a = "1", b = "x y", c = "é" } }):text())
      assert.equal("application/x-www-form-urlencoded", r.content_type)
      assert.equal("a=1&b=x+y&c=%C3%A9", r.body)
    end))

    it("posts JSON and decodes JSON", async(function()
      local cjson = require "cjson"
      local r = echo_fields(http.post(srv:url("/echo"),
        { json = { a = { 1, 2 } } }):text())
      assert.equal("application/json", r.content_type)
      assert.same({ a = { 1, 2 } }, cjson.decode(r.body))
      local data = http.get(srv:url("/data.json")):json()
      assert.equal("lunio", data.name)
      assert.same({ 1, 2, 3 }, data.list)
    end))

    it("says how to install lua-cjson when it is missing", async(function()
      local saved_http = package.loaded["lunio.http"]
      local saved_cjson = package.loaded.cjson
      local saved_preload = package.preload.cjson
      package.loaded["lunio.http"] = nil
      package.loaded.cjson = nil
      package.preload.cjson = function() error("module 'cjson' not found") end
      local ok, fresh = pcall(require, "lunio.http")
      local ok1, err1, ok2, err2
      if ok then
        ok1, err1 = pcall(fresh.post, srv:url("/echo"), { json = {} })
        local r = fresh.get(srv:url("/data.json"))
        ok2, err2 = pcall(r.json, r)
      end
      package.loaded["lunio.http"] = saved_http
      package.loaded.cjson = saved_cjson
      package.preload.cjson = saved_preload
      assert.is_true(ok, fresh)
      assert.is_false(ok1)
      assert.matches("apt install lua%-cjson", tostring(err1))
      assert.is_false(ok2)
      assert.matches("apt install lua%-cjson", tostring(err2))
    end))

    it("goes through a proxy", async(function()
      -- nginx answers absolute-form requests, so it can play the proxy; the
      -- target host is never resolved by the client
      srv:clear_log()
      local r = http.get("http://example.invalid/small.txt",
        { proxy = srv:url("/") })
      assert.equal(200, r.status)
      assert.equal(1024, #r.body)
      assert.matches('"GET http://example.invalid/small.txt HTTP/1.1"',
        srv:log_lines()[1], 1, true)
      local err = raises("connect", http.get, "http://example.invalid/",
        { proxy = "http://127.0.0.1:1" })
      assert.equal(7, err.curl_code)
      assert.equal(200, http.get(srv:url("/small.txt"), { proxy = false }).status)
    end))

    it("sends basic auth", async(function()
      local r = echo_fields(http.get(srv:url("/echo"),
        { auth = { "user", "pass" } }):text())
      assert.equal("Basic dXNlcjpwYXNz", r["header.authorization"])
      r = echo_fields(http.get(srv:url("/echo"),
        { auth = { user = "a", password = "b" } }):text())
      assert.equal("Basic YTpi", r["header.authorization"])
    end))

    it("runs many requests concurrently", async(function()
      local tasks = {}
      for i = 1, 100 do
        tasks[i] = lunio.create_task(http.get, srv:url("/small.txt"))
      end
      local results = await_all(tasks)
      for i = 1, 100 do assert.equal(1024, #results[i].body) end
    end))
  end)

  describe("headers", function()
    it("are case-insensitive, multi-valued and ordered", async(function()
      local r = http.get(srv:url("/headers/multi"))
      local h = r.headers
      assert.equal("one, two", h:get("x-multi"))
      assert.equal("one, two", h:get("X-MULTI"))
      assert.same({ "one", "two" }, h:get_all("X-Multi"))
      assert.same({ "a=1; Path=/", "b=2; Path=/" }, h:get_all("set-cookie"))
      assert.same({}, h:get_all("x-none"))
      assert.is_nil(h:get("x-none"))
      local names, multi = {}, {}
      for name, value in pairs(h) do
        names[#names + 1] = name:lower()
        if name:lower() == "x-multi" then multi[#multi + 1] = value end
      end
      assert.same({ "one", "two" }, multi)
      local first_cookie, first_multi
      for i, n in ipairs(names) do
        if n == "set-cookie" and not first_cookie then first_cookie = i end
        if n == "x-multi" and not first_multi then first_multi = i end
      end
      assert.is_true(first_cookie < first_multi) -- arrival order
      assert.equal(#names, #h)
    end))

    it("can be indexed by name, case-insensitively, as get() does", async(function()
      local r = http.get(srv:url("/small.txt"))
      local h = r.headers
      assert.equal("text/plain", h["Content-Type"])
      assert.equal("text/plain", h["content-type"])
      assert.equal(h:get("CONTENT-LENGTH"), h["CONTENT-LENGTH"])
      assert.equal("1024", h["Content-Length"])
      assert.is_nil(h["X-None"])
      assert.is_nil(h[1])
      local m = http.get(srv:url("/headers/multi")).headers
      assert.equal("one, two", m["X-Multi"]) -- repeated: joined, as get()
    end))

    it("index methods before headers of the same name", async(function()
      -- The fixture sends no header named like a method: build Headers of
      -- the real class (a response's metatable) with such names.
      local mt = getmetatable(http.get(srv:url("/small.txt")).headers)
      local h = setmetatable({ _flat = { "Get", "g", "List", "l", "Has", "h",
        "Get_All", "ga", "X-Real", "r" } }, mt)
      assert.is_function(h.get)
      assert.is_function(h.list)
      assert.is_function(h.has)
      assert.is_function(h.get_all)
      assert.equal("g", h:get("get")) -- the method still finds them
      assert.equal("l", h:get("LIST"))
      assert.equal("g", h["GET"])     -- other spellings are not methods
      assert.equal("r", h["x-real"])
      assert.equal(5, #h)
    end))

    it("sends lists as repeated headers and numbers as text", async(function()
      local r = echo_fields(http.get(srv:url("/echo"), {
        headers = { ["X-Multi"] = { "1", "2" }, ["X-Custom"] = 42 },
      }):text())
      assert.matches("X%-Multi: 1\r?\nX%-Multi: 2", r.raw)
      assert.equal("42", r["header.x-custom"])
    end))

    it("can remove a default header with false", async(function()
      local r = echo_fields(http.get(srv:url("/echo"),
        { headers = { Accept = false, ["User-Agent"] = "me/1" } }):text())
      assert.equal("", r["header.accept"])
      assert.equal("me/1", r["header.user-agent"])
    end))

    it("rejects CR/LF (header injection)", async(function()
      for _, h in ipairs({
        { ["X-Test"] = "a\r\nInjected: 1" },
        { ["X-Test"] = { "ok", "b\nInjected: 1" } },
        { ["X-Te\r\nst"] = "a" },
        { ["X Test"] = "a" },
      }) do
        local ok, err = pcall(http.get, srv:url("/echo"), { headers = h })
        assert.is_false(ok)
        assert.matches("bad argument #2 to 'get'", tostring(err))
      end
      local ok, err = pcall(http.get, "http://127.0.0.1/\r\nX: 1")
      assert.is_false(ok)
      assert.matches("bad argument #1 to 'get'", tostring(err))
    end))
  end)

  describe("bad arguments", function()
    it("are reported with the argument position", async(function()
      local cases = {
        { http.get, { "ftp://x/" }, "#1 to 'get'.*http://" },
        { http.get, { 42 }, "#1 to 'get'" },
        { http.get, { srv:url("/"), { timout = 1 } }, "#2 to 'get'.*timout" },
        { http.post, { srv:url("/"), { body = "a", json = {} } },
          "#2 to 'post'.*only one" },
        { http.get, { srv:url("/"), { timeout = -1 } }, "#2 to 'get'.*timeout" },
        { http.get, { srv:url("/"), { redirects = 1.5 } }, "#2 to 'get'.*redirects" },
        { http.get, { srv:url("/"), { http_version = "3" } }, "#2 to 'get'.*http_version" },
        { http.get, { srv:url("/"), { on_progress = 1 } }, "#2 to 'get'.*on_progress" },
        { http.get, { srv:url("/"), { stream = true, output = "/tmp/x" } },
          "#2 to 'get'.*stream and output" },
        { http.request, { "BAD METHOD", srv:url("/") }, "#1 to 'request'" },
        { http.Session, { { max_per_host = -1 } }, "#1 to 'Session'" },
        { http.Session, { { bogus = 1 } }, "#1 to 'Session'.*bogus" },
      }
      for _, c in ipairs(cases) do
        local ok, err = pcall(c[1], table.unpack(c[2]))
        assert.is_false(ok)
        assert.matches("bad argument " .. c[3], tostring(err))
      end
    end))
  end)

  describe("redirects", function()
    it("follows them and reports the final URL", async(function()
      local r = http.get(srv:url("/redirect/3"))
      assert.equal(200, r.status)
      assert.equal(srv:url("/small.txt"), r.url)
      assert.equal(1024, #r.body)
    end))

    it("allows exactly N hops with redirects = N", async(function()
      -- /redirect/3 -> /2 -> /1 -> /0 -> /small.txt: 4 hops
      assert.equal(200, http.get(srv:url("/redirect/3"), { redirects = 4 }).status)
      local err = raises("too_many_redirects", http.get,
        srv:url("/redirect/3"), { redirects = 3 })
      assert.equal(47, err.curl_code)
    end))

    it("does not follow with redirects = 0", async(function()
      local r = http.get(srv:url("/redirect/1"), { redirects = 0 })
      assert.equal(302, r.status)
      assert.equal("Moved Temporarily", r.reason)
      assert.equal("/redirect/0", r.headers:get("location"))
    end))

    it("stops a redirect loop", async(function()
      local err = raises("too_many_redirects", http.get, srv:url("/loop"))
      assert.equal(srv:url("/loop"), err.url)
      assert.equal(47, err.curl_code)
    end))
  end)

  describe("statuses", function()
    it("are not errors; raise_for_status raises http_status", async(function()
      local r = http.get(srv:url("/status/404"))
      assert.equal(404, r.status)
      assert.is_false(r.ok)
      assert.equal("Not Found", r.reason)
      local err = raises("http_status", r.raise_for_status, r)
      assert.equal(404, err.status)
      assert.equal(srv:url("/status/404"), err.url)
      assert.equal(r, err.response)
      local ok = http.get(srv:url("/status/204"))
      assert.equal(ok, ok:raise_for_status())
      assert.equal(503, http.get(srv:url("/status/503")).status)
    end))
  end)

  describe("compression", function()
    it("decompresses by default", async(function()
      local r = http.get(srv:url("/gzip.txt"))
      assert.equal("gzip", r.headers:get("content-encoding"))
      assert.equal(read_file(srv.www .. "/gzip.txt"), r.body)
    end))

    it("sends no Accept-Encoding with decompress = false", async(function()
      local e = echo_fields(http.get(srv:url("/echo"),
        { decompress = false }):text())
      assert.equal("", e["header.accept-encoding"])
      local r = http.get(srv:url("/gzip.txt"), {
        decompress = false, headers = { ["Accept-Encoding"] = "gzip" } })
      assert.equal("gzip", r.headers:get("content-encoding"))
      assert.equal("\31\139", r.body:sub(1, 2)) -- raw gzip bytes
    end))
  end)

  describe("sessions", function()
    -- A request without options reuses a curl handle set up for the same
    -- template (its URL changes, nothing else); a request with options, or
    -- another template, must never inherit a setting from it.
    it("reuse handles set up for option-less requests without mixing options",
      async(function()
        local s <close> = http.Session({ max_per_host = 2 })
        for _ = 1, 3 do
          assert.equal(1024, #s:get(srv:url("/small.txt")).body)
          local h = s:head(srv:url("/small.txt"))
          assert.equal(200, h.status)
          assert.equal("", h.body)
          local e = echo_fields(s:get(srv:url("/echo"),
            { headers = { ["X-Test"] = "once" } }):text())
          assert.equal("once", e["header.x-test"])
          e = echo_fields(s:get(srv:url("/echo")):text())
          assert.equal("", e["header.x-test"])
          assert.equal("GET", e.method)
          e = echo_fields(s:post(srv:url("/echo")):text())
          assert.equal("POST", e.method)
          assert.equal(302, s:get(srv:url("/redirect/1"), { redirects = 0 }).status)
          assert.equal(200, s:get(srv:url("/redirect/1")).status)
          local tls = s:get(srv:url("/small.txt", "tls"), { cainfo = srv.cert })
          assert.equal("2", tls.http_version)
        end
        -- lazily parsed fields of a reused handle's response
        local r = s:get(srv:url("/small.txt"))
        assert.equal("OK", r.reason)
        assert.equal("text/plain", r.headers["Content-Type"])
        assert.is_true(r.timings.total >= r.timings.ttfb)
      end))

    it("apply base_url and default headers, overridable", async(function()
      local s <close> = http.Session({
        base_url = srv:url("/"),
        headers = { ["X-Session"] = "s", ["X-Test"] = "base" },
      })
      local e = echo_fields(s:get("echo", { headers = { ["x-test"] = "req" } }):text())
      assert.equal("s", e["header.x-session"])
      assert.equal("req", e["header.x-test"])
      assert.not_matches("base", e.raw)
      assert.equal(1024, #s:get("/small.txt").body)
      assert.equal(200, s:get(srv:url("/small.txt")).status) -- absolute URL
    end))

    it("apply option defaults", async(function()
      local s <close> = http.Session({ redirects = 0, auth = { "u", "p" } })
      assert.equal(302, s:get(srv:url("/redirect/1")).status)
      assert.equal(200, s:get(srv:url("/redirect/1"), { redirects = 5 }).status)
      local e = echo_fields(s:get(srv:url("/echo")):text())
      assert.equal("Basic dTpw", e["header.authorization"])
    end))

    it("keep a cookie jar of their own", async(function()
      local a <close> = http.Session()
      local b <close> = http.Session()
      a:get(srv:url("/small.txt")) -- later requests use a recycled handle
      a:get(srv:url("/headers/multi"))
      local ea = echo_fields(a:get(srv:url("/echo")):text())
      local eb = echo_fields(b:get(srv:url("/echo")):text())
      assert.matches("a=1", ea["header.cookie"])
      assert.matches("b=2", ea["header.cookie"])
      assert.equal("", eb["header.cookie"])
    end))

    it("reuse connections (keep-alive)", async(function()
      local s <close> = http.Session()
      srv:clear_log()
      for _ = 1, 20 do assert.equal(200, s:get(srv:url("/small.txt")).status) end
      assert.equal(20, srv:requests("http"))
      assert.equal(1, srv:connections("http"))
    end))

    it("limit connections per host (1,000 fetches, max_per_host = 8)",
      async(function()
        local s <close> = http.Session({ max_per_host = 8 })
        srv:clear_log()
        local tasks = {}
        for i = 1, 1000 do
          tasks[i] = lunio.create_task(function()
            return #s:get(srv:url("/small.txt")).body
          end)
        end
        local sizes = await_all(tasks)
        for i = 1, 1000 do assert.equal(1024, sizes[i]) end
        assert.equal(1000, srv:requests("http"))
        local conns = srv:connections("http")
        assert.is_true(conns >= 1 and conns <= 8,
          "opened " .. conns .. " connections")
      end, { timeout = 30 }))

    -- Regression: libcurl sized its idle-connection cache at 4 x the
    -- handles currently added; between bursts that count drops (handles
    -- leave as transfers complete) and keep-alive connections were closed.
    it("keep their connections across bursts of requests", async(function()
      local s <close> = http.Session({ max_per_host = 16 })
      srv:clear_log()
      for _ = 1, 20 do
        local tasks = {}
        for i = 1, 16 do
          tasks[i] = lunio.create_task(function()
            return s:get(srv:url("/small.txt")).status
          end)
        end
        await_all(tasks)
      end
      assert.equal(320, srv:requests("http"))
      local conns = srv:connections("http")
      assert.is_true(conns <= 16, "opened " .. conns .. " connections")
    end, { timeout = 30 }))

    it("raise kind 'closed' once closed", async(function()
      local s = http.Session()
      assert.equal(200, s:get(srv:url("/small.txt")).status)
      s:close()
      s:close() -- idempotent
      assert.is_true(s:closed())
      raises("closed", s.get, s, srv:url("/small.txt"))
      local t = http.Session()
      do
        local _ <close> = t
      end
      raises("closed", t.get, t, srv:url("/small.txt"))
    end))

    it("wake a task parked on a transfer when closed", async(function()
      local s = http.Session()
      local task = lunio.create_task(s.get, s, srv:url("/slow"))
      lunio.sleep(0.1)
      s:close()
      raises("closed", task.await, task)
    end))

    it("are bound to one loop and closed with it", function()
      local s = http.Session()
      local url = srv:url("/small.txt")
      local loop1 = lunio.new_loop()
      assert.equal(200, loop1:run(function() return s:get(url).status end))
      local loop2 = lunio.new_loop()
      local err = loop2:run(function()
        local ok, e = lunio.pcall(s.get, s, url)
        assert(not ok)
        return e
      end)
      assert.is_true(lunio.is_error(err, "invalid_state"), tostring(err))
      loop1:close()
      err = loop2:run(function()
        local ok, e = lunio.pcall(s.get, s, url)
        assert(not ok)
        return e
      end)
      assert.is_true(lunio.is_error(err, "closed"), tostring(err))
      loop2:close()
      s:close()
    end)

    it("survive being collected without close", async(function()
      for _ = 1, 5 do
        local s = http.Session()
        s:get(srv:url("/small.txt"))
      end
      collectgarbage()
      collectgarbage()
      assert.equal(200, http.get(srv:url("/small.txt")).status)
    end))
  end)

  describe("HTTP/2", function()
    it("speaks h2c with prior knowledge", async(function()
      local r = http.get(srv:url("/small.txt", "h2c"),
        { http_version = "2-prior-knowledge" })
      assert.equal(200, r.status)
      assert.equal("2", r.http_version)
      assert.equal("", r.reason)
      assert.equal(1024, #r.body)
    end))

    it("multiplexes concurrent requests on one connection (TLS, ALPN)",
      async(function()
        local s <close> = http.Session({ cainfo = srv.cert })
        srv:clear_log()
        assert.equal("2", s:get(srv:url("/small.txt", "tls")).http_version)
        local tasks = {}
        for i = 1, 50 do
          tasks[i] = lunio.create_task(s.get, s, srv:url("/small.txt", "tls"))
        end
        for _, r in ipairs(await_all(tasks)) do
          assert.equal("2", r.http_version)
          assert.equal(1024, #r.body)
        end
        assert.equal(51, srv:requests("tls"))
        assert.equal(1, srv:connections("tls"))
      end))

    -- libcurl 7.88.1 cannot put a second request on an h2c prior-knowledge
    -- connection (curl#10634); lunio gives each one its own connection.
    it("runs h2c prior-knowledge requests concurrently and in sequence",
      async(function()
        local s <close> = http.Session({ http_version = "2-prior-knowledge" })
        for _ = 1, 3 do
          assert.equal("2", s:get(srv:url("/small.txt", "h2c")).http_version)
        end
        local tasks = {}
        for i = 1, 50 do
          tasks[i] = lunio.create_task(s.get, s, srv:url("/small.txt", "h2c"))
        end
        for _, r in ipairs(await_all(tasks)) do
          assert.equal("2", r.http_version)
        end
      end))
  end)

  describe("TLS", function()
    it("verifies against cainfo", async(function()
      local r = http.get(srv:url("/small.txt", "tls"), { cainfo = srv.cert })
      assert.equal(200, r.status)
      assert.equal("2", r.http_version) -- ALPN
      assert.is_true(r.timings.tls > 0)
      assert.equal(1024, #r.body)
    end))

    it("fails verification without it", async(function()
      local err = raises("tls", http.get, srv:url("/small.txt", "tls"))
      assert.equal(srv:url("/small.txt", "tls"), err.url)
      assert.equal(60, err.curl_code)
    end))

    it("skips verification with verify = false", async(function()
      local r = http.get(srv:url("/small.txt", "tls"),
        { verify = false, http_version = "1.1" })
      assert.equal(200, r.status)
      assert.equal("1.1", r.http_version)
    end))
  end)

  describe("streaming", function()
    it("delivers chunked bodies piece by piece", async(function()
      local t0 = lunio.now()
      local r <close> = http.get(srv:url("/chunked"), { stream = true })
      assert.equal(200, r.status)
      assert.is_nil(r.body)
      assert.is_true(lunio.now() - t0 < 0.25, "fetch waited for the body")
      local pieces = {}
      for chunk in r:chunks() do pieces[#pieces + 1] = chunk end
      assert.is_true(#pieces >= 2)
      assert.equal("chunk 1\nchunk 2\nchunk 3\nchunk 4\n", table.concat(pieces))
      assert.is_nil(r:read())
      assert.is_true(r.timings.total >= 0.2)
    end))

    it("reads at most n bytes", async(function()
      local r = http.get(srv:url("/small.txt"), { stream = true })
      local a = r:read(100)
      assert.equal(100, #a)
      local rest = r:text()
      assert.equal(read_file(srv.www .. "/small.txt"), a .. rest)
    end))

    it("applies backpressure to a slow reader (32 MiB)", async(function()
      local r <close> = http.get(srv:url("/big.bin"),
        { stream = true, http_version = "1.1" })
      local total, max_buffered, paused = 0, 0, false
      while true do
        local chunk = r:read(256 * 1024)
        if not chunk then break end
        total = total + #chunk
        local st = r:_transfer_state()
        max_buffered = math.max(max_buffered, st.buffered)
        paused = paused or st.paused
        if total < 8 * 1024 * 1024 then lunio.sleep(0.002) end
      end
      assert.equal(32 * 1024 * 1024, total)
      assert.is_true(paused, "the transfer was never paused")
      assert.is_true(max_buffered <= 2 * 1024 * 1024,
        "buffered " .. max_buffered .. " bytes")
    end, { timeout = 20 }))

    it("streams over HTTP/2 too", async(function()
      local r = http.get(srv:url("/large.bin", "h2c"),
        { stream = true, http_version = "2-prior-knowledge" })
      local n = 0
      for chunk in r:chunks() do
        n = n + #chunk
        lunio.sleep(0)
      end
      assert.equal(1024 * 1024, n)
    end))

    it("writes the body to a file with output", async(function()
      local path = os.tmpname()
      local r = http.get(srv:url("/large.bin"), { output = path })
      assert.equal(200, r.status)
      assert.is_nil(r.body)
      assert.equal(path, r.output)
      assert.equal(read_file(srv.www .. "/large.bin"), read_file(path))
      raises("invalid_state", r.text, r)
      os.remove(path)
      local err = raises("enoent", http.get, srv:url("/small.txt"),
        { output = "/nonexistent/dir/file" })
      assert.equal("/nonexistent/dir/file", err.path)
    end))

    it("reports progress", async(function()
      local calls = {}
      local r = http.get(srv:url("/large.bin"), {
        on_progress = function(received, total)
          calls[#calls + 1] = { received, total }
        end,
      })
      assert.equal(1024 * 1024, #r.body)
      assert.is_true(#calls >= 1)
      local last = calls[#calls]
      assert.same({ 1024 * 1024, 1024 * 1024 }, last)
      for i = 2, #calls do assert.is_true(calls[i][1] >= calls[i - 1][1]) end
      -- streamed responses report from read()
      local seen = 0
      local s = http.get(srv:url("/large.bin"), {
        stream = true,
        on_progress = function(received) seen = received end,
      })
      s:text()
      assert.equal(1024 * 1024, seen)
    end))

    it("lets on_progress await and propagates its errors", async(function()
      local n = 0
      http.get(srv:url("/large.bin"), {
        on_progress = function()
          n = n + 1
          lunio.sleep(0)
        end,
      })
      assert.is_true(n >= 1)
      local ok, err = lunio.pcall(http.get, srv:url("/large.bin"), {
        on_progress = function() error("stop here") end,
      })
      assert.is_false(ok)
      assert.matches("stop here", tostring(err))
    end))

    it("enforces max_body_size", async(function()
      local err = raises("body_too_large", http.get, srv:url("/large.bin"),
        { max_body_size = 1000 })
      assert.equal(srv:url("/large.bin"), err.url)
      raises("body_too_large", http.get, srv:url("/chunked"),
        { max_body_size = 10 })
      assert.equal(1024, #http.get(srv:url("/small.txt"),
        { max_body_size = 1024 }).body)
    end))
  end)

  describe("failures", function()
    it("times out (kind timeout)", async(function()
      local t0 = lunio.now()
      local err = raises("timeout", http.get, srv:url("/slow"), { timeout = 0.5 })
      assert.equal(srv:url("/slow"), err.url)
      assert.equal(28, err.curl_code)
      assert.is_true(lunio.now() - t0 < 2)
    end))

    it("ends a transfer that stalls mid-body after idle_timeout", async(function()
      local t0 = lunio.now()
      local err = raises("timeout", http.get, srv:url("/stall"), { idle_timeout = 1 })
      assert.equal(28, err.curl_code)
      local took = lunio.now() - t0
      assert.is_true(took >= 1 and took < 8, "took " .. took)
    end, { timeout = 12 }))

    it("does not cut a slow download that keeps moving", async(function()
      local r = http.get(srv:url("/trickle"), { idle_timeout = 1 })
      assert.equal(200, r.status)
      assert.matches("trickle done", r.body, 1, true)
    end, { timeout = 8 }))

    it("validates idle_timeout; false turns it off", async(function()
      assert.matches("idle_timeout must be a positive number",
        helper.errmsg(http.get, srv:url("/small.txt"), { idle_timeout = -1 }))
      assert.matches("idle_timeout must be a positive number",
        helper.errmsg(http.get, srv:url("/small.txt"), { idle_timeout = "x" }))
      assert.equal(200, http.get(srv:url("/small.txt"), { idle_timeout = false }).status)
      local s <close> = http.Session({ idle_timeout = 5 })
      assert.equal(200, s:get(srv:url("/small.txt")).status)
    end))

    it("reports a refused connection (kind connect)", async(function()
      local err = raises("connect", http.get, "http://127.0.0.1:1/")
      assert.equal("http://127.0.0.1:1/", err.url)
      assert.equal(7, err.curl_code)
    end))

    it("reports an unresolvable host (kind resolve)", async(function()
      local err = raises("resolve", http.get, "http://nonexistent.invalid/")
      assert.equal(6, err.curl_code)
    end))

    it("reports a server closing mid-body (kind protocol)", async(function()
      local bad = bad_server.start()
      local ok, err = lunio.pcall(http.get, bad:url("/"))
      local ok2, err2 = lunio.pcall(function()
        local r = http.get(bad:url("/"), { stream = true })
        return r:text()
      end)
      bad:stop()
      assert.is_false(ok)
      assert.is_true(lunio.is_error(err, "protocol"), tostring(err))
      assert.equal(18, err.curl_code) -- CURLE_PARTIAL_FILE
      assert.is_false(ok2)
      assert.is_true(lunio.is_error(err2, "protocol"), tostring(err2))
    end))
  end)

  describe("cancellation", function()
    it("aborts a transfer at once and keeps the session usable",
      async(function()
        local s <close> = http.Session()
        local task = lunio.create_task(s.get, s, srv:url("/big.bin"))
        lunio.sleep(0.02)
        assert.equal(1, s:stats().active)
        task:cancel()
        raises("cancelled", task.await, task)
        assert.equal(0, s:stats().active)
        assert.equal(1024, #s:get(srv:url("/small.txt")).body)
      end))

    it("aborts a streamed read", async(function()
      local s <close> = http.Session()
      local r = s:get(srv:url("/chunked"), { stream = true })
      local task = lunio.create_task(function()
        for _ in r:chunks() do end
      end)
      lunio.sleep(0.05)
      task:cancel()
      raises("cancelled", task.await, task)
      assert.equal(0, s:stats().active)
      raises("aborted", r.read, r)
    end))

    it("works with lunio.timeout and wait_for", async(function()
      local s <close> = http.Session()
      local err = raises("timeout", function()
        local _ <close> = lunio.timeout(0.2)
        s:get(srv:url("/slow"))
      end)
      assert.is_not_nil(err)
      assert.equal(0, s:stats().active)
      raises("timeout", lunio.wait_for, function()
        return s:get(srv:url("/slow"))
      end, 0.2)
      assert.equal(0, s:stats().active)
      assert.equal(200, s:get(srv:url("/small.txt")).status)
    end))

    it("aborts transfers still running when the loop ends", function()
      local s = http.Session()
      local loop = lunio.new_loop()
      local t
      loop:run(function()
        t = lunio.create_task(s.get, s, srv:url("/slow"))
        lunio.create_task(function()
          local r = s:get(srv:url("/big.bin"), { stream = true })
          r:read()
          lunio.sleep(10)
        end)
        lunio.sleep(0.05)
        assert.equal(2, s:stats().active)
      end)
      assert.is_true(t:cancelled())
      loop:close()
      assert.is_true(s:closed())
      assert.same({ active = 0, sockets = 0, idle_handles = 0, bound = false },
        s:stats())
    end)

    it("a session closed under an unread stream ends it", async(function()
      local s = http.Session()
      local r = s:get(srv:url("/big.bin"), { stream = true })
      assert.is_string(r:read())
      s:close()
      local err = raises("closed", function() r:text() end)
      assert.equal(srv:url("/big.bin"), err.url)
    end))

    it("a dropped streamed response is aborted when collected",
      async(function()
        local s <close> = http.Session()
        do
          local r = s:get(srv:url("/big.bin"), { stream = true })
          r:read()
        end
        assert.equal(1, s:stats().active)
        collectgarbage()
        collectgarbage()
        assert.equal(0, s:stats().active)
      end))

    it("closing a streamed response aborts it", async(function()
      local s <close> = http.Session()
      do
        local r <close> = s:get(srv:url("/big.bin"), { stream = true })
        assert.is_string(r:read())
        assert.equal(1, s:stats().active)
      end
      assert.equal(0, s:stats().active)
    end))
  end)
end)
