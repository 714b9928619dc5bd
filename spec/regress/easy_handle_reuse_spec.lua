-- Before 8.1.0, libcurl left its header store's "previous header" pointer
-- aimed into the last response when an easy handle was reused (curl PR
-- #11103): a Session recycles its easy handles, and a next response whose
-- header block began with a continuation line made libcurl read freed
-- memory (ASan: heap-use-after-free under curl_multi_socket_action; a
-- plain build once died with "malloc(): unaligned tcache chunk detected").
-- The header fuzzer of issue 14 found it twice: after a clean response and
-- after one cut short inside its headers. A Session now recycles an easy
-- handle only with libcurl 8.1.0 or later, and only after a transfer that
-- completed cleanly. The first two cases show the bad read under make
-- check-asan; the third checks the rule itself on any build.
local lunio = require "lunio"
local h = require "helper"
local bad_server = require "support.bad_server"

-- The fuzzer's responses, minimized (the lengths matter).
local CUT = "http/1.1 198 OK\r\nSet-Cookie: " .. ("v"):rep(30346) .. "\r\nbody YM$51Qzkix'2+"
local FOLDED = "HTTP/1.1 200 OK\r\n : -\4-!\25\0318N0-\181\r\nbody TSWCup9#m.IH`"
local CLEAN = "HTTP/1.1 244 \r\n%jV&M!M^Ex8uK'uc9NUy:2`-U`Zh++4#T+DNZ04=5zQ\r\n\r\nbody Lwjqdc"
local FOLDED2 = "HTTP/1.1 835\r\n : u\249H\183\239\r\n\r\n"
local GOOD = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

local function libcurl_at_least(major, minor)
  local a, b = lunio.versions().libcurl:match("^(%d+)%.(%d+)")
  a, b = tonumber(a), tonumber(b)
  return a > major or (a == major and b >= minor)
end

describe("regress: reused easy handles", function()
  local raw
  setup(function() raw = bad_server.start("raw") end)
  teardown(function() raw:stop() end)

  local function post(s, body)
    return pcall(s.post, s, raw:url("/r"), { body = body })
  end

  it("a cut header block, then a folded first line: errors, no bad read", h.async(function()
    local s <close> = lunio.http.Session({ redirects = 0 })
    for _ = 1, 3 do
      for _, body in ipairs({ CUT, FOLDED }) do
        local ok, err = post(s, body)
        assert.is_false(ok)
        assert.is_true(lunio.is_error(err, "protocol"), tostring(err))
      end
    end
    assert.are.equal(200, s:post(raw:url("/r"), { body = GOOD }).status)
  end, { timeout = 5 }))

  it("a clean response, then a folded first line: no bad read", h.async(function()
    local s <close> = lunio.http.Session({ redirects = 0 })
    for _ = 1, 3 do
      local ok, resp = post(s, CLEAN)
      assert.is_true(ok, tostring(resp))
      assert.are.equal(244, resp.status)
      -- a continuation line with no header before it
      local ok2, err = post(s, FOLDED2)
      assert.is_true(ok2 or lunio.is_error(err, "protocol"), tostring(err))
    end
  end, { timeout = 5 }))

  it("recycles handles only from libcurl 8.1.0 on, after clean transfers", h.async(function()
    local s <close> = lunio.http.Session({ redirects = 0 })
    local kept = libcurl_at_least(8, 1) and 1 or 0
    assert.are.equal("ok", s:post(raw:url("/r"), { body = GOOD }).body)
    assert.are.equal(kept, s:stats().idle_handles)
    post(s, CUT)
    assert.are.equal(0, s:stats().idle_handles) -- a failed transfer's handle goes
    assert.are.equal("ok", s:post(raw:url("/r"), { body = GOOD }).body)
    assert.are.equal(kept, s:stats().idle_handles)
  end, { timeout = 5 }))
end)
