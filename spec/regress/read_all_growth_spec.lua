-- stream:read_all() of a big stream took time quadratic in its size: past
-- the buffer pool's largest class (4 MiB) the read queue grew by exactly
-- one read (64 KiB) at a time, copying everything it held on each read
-- (100 MiB from a child process: about a minute). The queue now at least
-- doubles when it grows.
local lunio = require "lunio"
local sp = require "lunio.subprocess"
local h = require "helper"

describe("regress: read_all of a big stream", function()
  it("64 MiB through a pipe in linear time", h.async(function()
    local n = 64 << 20
    local p <close> = sp.exec({ "sh", "-c", "yes | head -c " .. n }, { stdout = "pipe" })
    local t0 = lunio.now()
    local data = p.stdout:read_all()
    local took = lunio.now() - t0
    assert.equal(n, #data)
    assert.equal(0, (p:wait()))
    -- about 0.2 s; the quadratic growth took over 10 s
    assert.is_true(took < 3 * h.time_scale, took)
  end, { timeout = 30 }))
end)
