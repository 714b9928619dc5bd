-- libcurl 7.88.1 keeps state of a response cut short inside its headers
-- across curl_easy_reset: when the next response on that recycled handle
-- began its header block with a continuation line, libcurl read freed
-- memory (ASan: heap-use-after-free in curl_multi_socket_action; glibc
-- once aborted with "malloc(): unaligned tcache chunk detected"). Found by
-- the header fuzzer of issue 14. A Session now recycles an easy handle only
-- after a transfer that completed cleanly. (The first case reproduces the
-- read under make check-asan; the second checks the rule itself.)
local lunio = require "lunio"
local h = require "helper"
local bad_server = require "support.bad_server"

-- The fuzzer's two responses, minimized (the lengths matter).
local CUT = "http/1.1 198 OK\r\nSet-Cookie: " .. ("v"):rep(30346) .. "\r\nbody YM$51Qzkix'2+"
local FOLDED = "HTTP/1.1 200 OK\r\n : -\4-!\25\0318N0-\181\r\nbody TSWCup9#m.IH`"
local GOOD = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

describe("regress: easy handles after a failed transfer", function()
  local raw
  setup(function() raw = bad_server.start("raw") end)
  teardown(function() raw:stop() end)

  it("a cut header block, then a folded first line: errors, no bad read", h.async(function()
    local s <close> = lunio.http.Session({ redirects = 0 })
    for _ = 1, 3 do
      for _, body in ipairs({ CUT, FOLDED }) do
        local ok, err = pcall(s.post, s, raw:url("/r"), { body = body })
        assert.is_false(ok)
        assert.is_true(lunio.is_error(err, "protocol"), tostring(err))
      end
    end
    assert.are.equal(200, s:post(raw:url("/r"), { body = GOOD }).status)
  end, { timeout = 5 }))

  it("only a clean transfer gives its handle back", h.async(function()
    local s <close> = lunio.http.Session({ redirects = 0 })
    assert.are.equal("ok", s:post(raw:url("/r"), { body = GOOD }).body)
    assert.are.equal(1, s:stats().idle_handles)
    pcall(s.post, s, raw:url("/r"), { body = CUT })
    assert.are.equal(0, s:stats().idle_handles) -- cleaned up, not kept
    assert.are.equal("ok", s:post(raw:url("/r"), { body = GOOD }).body)
    assert.are.equal(1, s:stats().idle_handles)
  end, { timeout = 5 }))
end)
