-- The core examples run as documented (lua5.4 examples/X.lua) and print
-- what their comments promise.
local h = require "helper"

describe("examples/hello.lua", function()
  it("greets after waiting, and exits 0", function()
    local out, err, code = h.lua("examples/hello.lua")
    assert.are.equal(0, code, err)
    assert.are.equal("", err)
    assert.are.equal("Hello, world!\n", out)
  end)
end)

describe("examples/three_ways.lua", function()
  it("runs one task from each kind of callable, each printing its line", function()
    local out, err, code = h.lua("examples/three_ways.lua")
    assert.are.equal(0, code, err)
    assert.are.equal("", err)
    local lines = {}
    for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
    assert.are.equal(4, #lines, out)
    -- tasks start in creation order and sleep equally long
    assert.matches("^Task%-%d+: hello, world, from a named function$", lines[1])
    assert.matches("^Task%-%d+: hello from an anonymous function$", lines[2])
    -- the callable table's task carries the table's name
    assert.are.equal("greeter: hello, world, from a callable table", lines[3])
    assert.are.equal("done: greet, anonymous, greeter", lines[4])
    -- the two default names are distinct tasks
    assert.are_not.equal(lines[1]:match("^(Task%-%d+)"), lines[2]:match("^(Task%-%d+)"))
  end)
end)
