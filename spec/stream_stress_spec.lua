-- Stress (tagged: `make check-stress` runs it, `make test` leaves it out):
-- 5,000 connections at once to one lunio server, each echoing 100
-- messages, twice, in a child process whose descriptor limit is raised
-- to 20,000 (`ulimit -n`). Every echo must come back intact; afterwards
-- the open descriptors are back to where they started, and the memory
-- in use (Lua's, malloc's, and the resident set after malloc_trim) does
-- not grow from one round to the next. The figures are
-- printed.
local S = require "support.stress"
local field = S.field

describe("#stress streams", function()
  it("5,000 concurrent connections x 100 messages, twice, leak nothing", function()
    local out, code, text = S.child("spec/support/stress/tcp_load.lua", { 5000, 100, 2 },
      { nofile = 20000 })
    assert.are.equal(0, code, text)
    assert.are.equal("ok", out[#out])
    local start, r1, r2 = out[1], out[2], out[3]
    assert.matches("^start ", start)
    for i, r in ipairs({ r1, r2 }) do
      assert.matches("^round ", r)
      assert.are.equal(i, field(r, "round"))
      assert.are.equal(5000, field(r, "connections"))
      assert.are.equal(500000, field(r, "messages"))
    end
    -- all 5,000 were open at once (plus the server's ends: 10,000 sockets)
    assert.are.equal(5000, field(r1, "peak_open"))
    assert.is_true(field(r1, "peak_fds") >= field(start, "fds") + 10000, r1)
    -- descriptors back to where they started, after each round
    assert.are.equal(field(start, "fds"), field(r1, "fds"))
    assert.are.equal(field(start, "fds"), field(r2, "fds"))
    -- memory: the Lua heap keeps only a few MB of grown tables (the loop's
    -- pending array, the server's connection sets, the coroutine pool),
    -- and neither it nor malloc's heap grows from round 1 to round 2. The
    -- resident set is compared after malloc_trim: untrimmed, it depends on
    -- which freed pages glibc keeps (one CI run: 48.8 MB after round 1,
    -- 63.2 MB after round 2, with the same 67 MB peak in both)
    assert.is_true(field(r2, "lua") <= 4096, r2)
    assert.is_true(field(r2, "lua") <= field(r1, "lua") + 512, r2)
    assert.is_true(field(r2, "heap") <= field(r1, "heap") * 1.1 + 512, r2)
    assert.is_true(field(r2, "rss_trim") <= field(r1, "rss_trim") * 1.1, r2)
  end)
end)
