-- A server that sent a status line and closed the connection inside the
-- header block ("HTTP/1.1 200 OK\r\nContent-Ty") made a fetch return a 200
-- with an empty body: libcurl 7.88 reports success there. Found by the
-- fault specs of issue 14; such a transfer now raises kind "protocol".
local lunio = require "lunio"
local h = require "helper"
local bad_server = require "support.bad_server"

describe("regress: a header block cut short", function()
  local bad
  setup(function() bad = bad_server.start("close_headers") end)
  teardown(function() bad:stop() end)

  for _, opts in ipairs({ {}, { stream = true } }) do
    it("raises kind protocol" .. (opts.stream and " (streamed)" or ""), h.async(function()
      local s <close> = lunio.http.Session()
      local ok, err = pcall(s.get, s, bad:url("/x"), opts)
      assert.is_false(ok)
      assert.is_true(lunio.is_error(err, "protocol"), tostring(err))
      assert.matches("inside the response headers", err.message, 1, true)
      assert.are.equal(bad:url("/x"), err.url)
      assert.are.equal(8, err.curl_code)
    end))
  end
end)
