-- With every file descriptor in use, a fetch failed with libcurl's
-- "Couldn't connect to server" (it does not say that socket() failed), and
-- core.open_fds() returned nil (listing /proc/self/fd takes a descriptor).
-- Found by the fault specs of issue 14: the error (kind "connect") now
-- names the cause, and open_fds probes the descriptors when it must.
local S = require "support.stress"

describe("regress: descriptors exhausted", function()
  it("a fetch names the cause; open_fds still counts", function()
    local lines, code, text = S.child([[
      local lunio = require "lunio"
      local core = require "lunio.core"
      local S = require "support.stress"
      local _ = lunio.http
      lunio.run(function()
        local release = S.hold_all_fds()
        print("open_fds", core.open_fds())
        local ok, err = pcall(lunio.http.get, "http://127.0.0.1:9/")
        print("kind", not ok and err.kind)
        print("message", not ok and err.message)
        release()
        ok, err = pcall(lunio.http.get, "http://127.0.0.1:9/")
        print("after", not ok and err.kind, not ok and err.message:find("socket", 1, true))
      end)
    ]], {}, { nofile = 40, quiet = true, timeout = 30 })
    assert.are.equal(0, code, text)
    assert.are.equal("open_fds 40", lines[1]:gsub("\t", " "))
    assert.are.equal("kind connect", lines[2]:gsub("\t", " "))
    assert.matches("cannot open a socket: Too many open files (emfile)", lines[3], 1, true)
    -- with descriptors back, the same call gets as far as the connection
    assert.are.equal("after connect nil", lines[4]:gsub("\t", " "))
  end)
end)
